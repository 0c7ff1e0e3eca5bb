//! Actor authentication by public key: with a login actor only that actor's keys count; without,
//! the key must name exactly one actor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use crate::test_rig::Rig;

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICkGGf5fYYzdCbpBD+ID0Lb4YhyU6YnoDtWssAPMlfXf";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMQ3JxrwUa72wV9Z8znFN4J8V2lDoUv9Z1RS1YW5DM+u";
const KEY_C: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhMkfDo3rnifhw5Uqeqvs7ED+ytTdevzATWxACkPaaH";

#[tokio::test]
async fn a_key_authenticates_only_the_actor_it_is_registered_to() {
    let rig = Rig::new().await;
    let keys = format!(
        "kind: user\nname: key-alice\ngroups: [sre]\nsshKeys: [\"{KEY_A} alice@laptop\", \"{KEY_C}\"]\n---\n\
         kind: user\nname: key-bob\nsshKeys: [\"{KEY_B}\"]\n---\n\
         kind: servicePrincipal\nname: key-svc\ngroups: [deployers]\nsshKeys: [\"{KEY_C} ci\"]\n"
    );
    rig.control.apply(&keys, "admin@local").await.unwrap();
    let auth = |actor: Option<&'static str>, key: &'static str| {
        let control = rig.control.clone();
        async move { control.authenticate_actor(actor, key).await.unwrap() }
    };
    // The login actor's own key, whatever the comment.
    assert_eq!(
        auth(Some("key-alice"), KEY_A).await,
        Some(("key-alice".to_owned(), vec!["sre".to_owned()]))
    );
    // Another actor's key, an unknown actor, a key of no one: refused.
    assert_eq!(auth(Some("key-alice"), KEY_B).await, None);
    assert_eq!(auth(Some("nobody"), KEY_A).await, None);
    assert_eq!(
        auth(
            Some("key-bob"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5vYm9keXNrZXlub2JvZHlza2V5bm9ib2R5c2t"
        )
        .await,
        None
    );
    // A service principal by name, with the key it shares with a user.
    assert_eq!(
        auth(Some("key-svc"), KEY_C).await,
        Some(("key-svc".to_owned(), vec!["deployers".to_owned()]))
    );
    assert_eq!(
        auth(Some("key-alice"), KEY_C).await,
        Some(("key-alice".to_owned(), vec!["sre".to_owned()]))
    );
    // Without a login actor the key must name exactly one actor.
    assert_eq!(
        auth(None, KEY_B).await,
        Some(("key-bob".to_owned(), Vec::new()))
    );
    assert_eq!(auth(None, KEY_C).await, None);
    // Text that is not a key.
    assert_eq!(auth(Some("key-alice"), "").await, None);
}
