//! The one glob every pattern setting uses (`VAULT_ALLOW_IMAGES`, the
//! secret policy's images, commands, formulas and approvers): `*` matches
//! any run of characters, `/` and `:` included; every other character
//! matches itself. Nothing else is special.

/// True when `text` matches `pat`.
pub fn matches(pat: &str, text: &str) -> bool {
    glob(pat.as_bytes(), text.as_bytes())
}

fn glob(pat: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear-ish, no
    // recursion a hostile pattern could blow up.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_literals() {
        assert!(matches("vault-runner:*", "vault-runner:test"));
        assert!(matches("reg.example/org/*", "reg.example/org/x/y:1"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(!matches("busybox", "busybox:latest"));
        assert!(!matches("x*", ""));
        assert!(!matches("", "x"));
        let hostile = format!("{}b", "*a".repeat(50));
        assert!(!matches(&hostile, &"a".repeat(5000)));
    }
}
