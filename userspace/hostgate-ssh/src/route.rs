//! Which container an authenticated key reaches.
//!
//! The SSH user names the container (`web`) or the container and the
//! customer (`web+acme`), or is a name the customer mapped to one of its
//! containers (`shop` -> `web-prod-3`, sshpiper's user mapping). A key bound to one container reaches only that
//! one, and also when the user names no container of its customer (the key
//! alone routes). Every refusal is the same [`Denied`], and the proxy
//! answers it exactly like a wrong key, so that names cannot be probed.

/// What a stored key grants: its customer and, optionally, one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub customer: String,
    pub container: Option<String>,
    /// The customer's user names and the containers they stand for; a
    /// mapped name wins over a container of the same name.
    pub users: std::collections::BTreeMap<String, String>,
}

/// The one refusal; deliberately without a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied;

/// Routes `user` for a key granted by `grant`. `owner` says which customer
/// a container belongs to (`None`: no such container).
pub fn route(user: &str, grant: &KeyGrant, owner: impl Fn(&str) -> Option<String>) -> Result<String, Denied> {
    let (name, customer) = match user.split_once('+') {
        Some((n, c)) => (n, Some(c)),
        None => (user, None),
    };
    if customer.is_some_and(|c| c != grant.customer) {
        return Err(Denied);
    }
    let name = grant.users.get(name).map_or(name, String::as_str);
    let owned = |n: &str| owner(n).is_some_and(|c| c == grant.customer);
    match &grant.container {
        Some(bound) if bound == name => owned(bound).then(|| bound.clone()).ok_or(Denied),
        // A container of the customer other than the bound one: refused.
        Some(_) if owned(name) => Err(Denied),
        Some(bound) if customer.is_none() => owned(bound).then(|| bound.clone()).ok_or(Denied),
        Some(_) => Err(Denied),
        None => owned(name).then(|| name.to_string()).ok_or(Denied),
    }
}

/// A name a customer may map (`deploy`, `shop.prod`): what `useradd`
/// would take, and no `+`, which separates the customer.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    match name.chars().next() {
        None => Err("is empty".into()),
        _ if name.len() > 32 => Err(format!("{name:?} is longer than 32 characters")),
        Some('-') => Err(format!("{name:?} starts with '-'")),
        _ if !name.chars().all(ok_char) => Err(format!("{name:?} may hold only a-z, 0-9, '.', '_' and '-'")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner(n: &str) -> Option<String> {
        match n {
            "web" | "db" => Some("acme".into()),
            "shop" => Some("globex".into()),
            _ => None,
        }
    }

    fn grant(container: Option<&str>) -> KeyGrant {
        KeyGrant { customer: "acme".into(), container: container.map(String::from), users: Default::default() }
    }

    fn mapped(container: Option<&str>, users: &[(&str, &str)]) -> KeyGrant {
        let users = users.iter().map(|(u, c)| (u.to_string(), c.to_string())).collect();
        KeyGrant { users, ..grant(container) }
    }

    #[test]
    fn user_names_the_container() {
        assert_eq!(route("web", &grant(None), owner), Ok("web".into()));
        assert_eq!(route("web+acme", &grant(None), owner), Ok("web".into()));
        assert_eq!(route("shop", &grant(None), owner), Err(Denied), "foreign container");
        assert_eq!(route("web+globex", &grant(None), owner), Err(Denied), "foreign customer");
        assert_eq!(route("nosuch", &grant(None), owner), Err(Denied), "unknown");
    }

    #[test]
    fn bound_key_routes_alone() {
        assert_eq!(route("db", &grant(Some("db")), owner), Ok("db".into()));
        assert_eq!(route("git", &grant(Some("db")), owner), Ok("db".into()), "the key alone routes");
        assert_eq!(route("web", &grant(Some("db")), owner), Err(Denied), "another container");
        assert_eq!(route("shop", &grant(Some("db")), owner), Ok("db".into()), "a foreign name is no name");
        assert_eq!(route("git", &grant(Some("gone")), owner), Err(Denied), "bound container removed");
    }

    #[test]
    fn user_names_to_map() {
        assert!(check_user_name("deploy").is_ok() && check_user_name("shop.prod-2").is_ok());
        for bad in ["", "web+acme", "-o", "Root", "a b", &"x".repeat(33)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mapped_user_names() {
        let g = mapped(None, &[("deploy", "web"), ("db", "web"), ("steal", "shop")]);
        assert_eq!(route("deploy", &g, owner), Ok("web".into()));
        assert_eq!(route("deploy+acme", &g, owner), Ok("web".into()));
        assert_eq!(route("deploy+globex", &g, owner), Err(Denied), "foreign customer");
        assert_eq!(route("db", &g, owner), Ok("web".into()), "the map wins over a container's name");
        assert_eq!(route("steal", &g, owner), Err(Denied), "a map to a foreign container leads nowhere");
        let bound = mapped(Some("db"), &[("deploy", "web"), ("data", "db")]);
        assert_eq!(route("data", &bound, owner), Ok("db".into()));
        assert_eq!(route("deploy", &bound, owner), Err(Denied), "not the bound container");
    }

    proptest! {
        /// Whatever the user, a route only ever leads to a container of the
        /// key's own customer.
        #[test]
        fn never_a_foreign_container(
            user in "[a-z+]{0,12}",
            bound in proptest::option::of("[a-z]{1,5}"),
            users in proptest::collection::btree_map("[a-z]{1,4}", "[a-z]{1,5}", 0..4),
        ) {
            let g = KeyGrant { users, ..grant(bound.as_deref()) };
            if let Ok(c) = route(&user, &g, owner) {
                prop_assert_eq!(owner(&c), Some("acme".to_string()));
                if let Some(b) = &g.container { prop_assert_eq!(&c, b); }
            }
        }
    }
}
