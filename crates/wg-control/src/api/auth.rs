//! Authentication (bearer tokens) and role-typed authorisation.
//!
//! [`Caller<R>`] admits principals holding at least role `R`; [`Authenticated`] admits every
//! principal with a valid token, role or not (plain users: accepting a handoff, handing off
//! their own session, `whoami`) — such a route decides what the principal may do itself.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use wg_domain::ErrorCode;
use wg_domain::resources::Role;

use super::{ApiError, ApiState};
use crate::ControlError;

/// A role marker: the least role a route accepts.
pub trait MinRole: Send + Sync + 'static {
    /// The least role.
    const ROLE: Role;
}

/// Routes for auditors, operators and admins (read-only views).
#[derive(Debug)]
pub struct Auditor;
/// Routes for operators and admins (terminate, shadow, approve).
#[derive(Debug)]
pub struct Operator;
/// Routes for admins only (resources, vault).
#[derive(Debug)]
pub struct Admin;

impl MinRole for Auditor {
    const ROLE: Role = Role::Auditor;
}
impl MinRole for Operator {
    const ROLE: Role = Role::Operator;
}
impl MinRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// The authenticated caller of a route that requires at least role `R`.
#[derive(Debug)]
pub struct Caller<R: MinRole> {
    /// The principal, e.g. `admin@local`.
    pub principal: String,
    /// Its role.
    pub role: Role,
    _role: PhantomData<R>,
}

/// The authenticated caller of a route open to every principal (plain users included).
#[derive(Debug)]
pub struct Authenticated {
    /// The principal, e.g. `dan@corp`.
    pub principal: String,
    /// Its role; `None` for a plain user or a service principal.
    pub role: Option<Role>,
}

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let (principal, role) = authenticate(parts, state).await?;
        Ok(Authenticated { principal, role })
    }
}

/// Resolves the request's bearer token to `(principal, role)`.
async fn authenticate(parts: &Parts, state: &ApiState) -> Result<(String, Option<Role>), ApiError> {
    let token = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // RFC 7235 §2.1: the auth-scheme is case-insensitive.
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError(ControlError::new(
                ErrorCode::Unauthorized,
                "missing bearer token",
            ))
        })?;
    state
        .control
        .principal_for_token(token)
        .await?
        .ok_or_else(|| {
            ApiError(ControlError::new(
                ErrorCode::Unauthorized,
                "invalid or revoked token",
            ))
        })
}

impl<R: MinRole> FromRequestParts<ApiState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let (principal, role) = authenticate(parts, state).await?;
        match role {
            Some(role) if role >= R::ROLE => Ok(Caller {
                principal,
                role,
                _role: PhantomData,
            }),
            _ => Err(ApiError(ControlError::new(
                ErrorCode::Forbidden,
                format!("{principal} lacks the {:?} role this action needs", R::ROLE),
            ))),
        }
    }
}
