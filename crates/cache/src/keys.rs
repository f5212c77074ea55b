//! Key-component encoding: tenants and keys are caller-supplied, so `:` inside them must not
//! let `("a:b", "c")` and `("a", "b:c")` share a Redis key.

/// Escapes `%` and `:` so the result can sit between `:` separators unambiguously.
pub(crate) fn enc(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    for c in component.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn separators_cannot_collide() {
        assert_ne!(
            format!("{}:{}", enc("a:b"), enc("c")),
            format!("{}:{}", enc("a"), enc("b:c"))
        );
        assert_ne!(enc("%3A"), enc(":"));
        assert_eq!(enc("plain-tenant_1"), "plain-tenant_1");
    }
}
