//! Helpers for statements assembled at run time (filters, patches) with `$n` placeholders.

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Text or NULL.
    Text(Option<String>),
    /// A 64-bit integer or NULL.
    Int(Option<i64>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

/// Positional arguments of a statement; [`Args::push`] returns the placeholder to splice in.
#[derive(Debug, Default)]
pub(crate) struct Args(Vec<Arg>);

impl Args {
    /// Adds a value and returns its placeholder (`$1`, `$2`, …).
    pub(crate) fn push(&mut self, v: impl Into<Arg>) -> String {
        self.0.push(v.into());
        format!("${}", self.0.len())
    }

    /// Binds every value to a query over `sql`.
    pub(crate) fn bind(self, sql: &str) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(sql);
        for a in self.0 {
            q = match a {
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
            };
        }
        q
    }
}

/// `$1, $2, …, $n`.
pub(crate) fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `$first, …, $(first + n - 1)`: `n` placeholders after `first - 1` others.
pub(crate) fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
