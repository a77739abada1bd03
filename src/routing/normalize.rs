//! Path normalisation before matching: percent-decoding of unreserved characters only,
//! `.`/`..` segments resolved, repeated `/` collapsed, so that no encoding trick reaches a
//! route other than the one a filter was written for. Upstreams receive the normalised path.

use std::borrow::Cow;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn needs_work(p: &[u8]) -> bool {
    let n = p.len();
    for i in 0..n {
        match p[i] {
            b'%' => return true,
            b'/' => {
                if i + 1 < n && p[i + 1] == b'/' {
                    return true;
                }
                if i + 1 < n && p[i + 1] == b'.' {
                    // "/." followed by end, '/', or "." + end/'/'
                    let rest = &p[i + 1..];
                    if rest == b"."
                        || rest.starts_with(b"./")
                        || rest == b".."
                        || rest.starts_with(b"../")
                    {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// Normalises a request path (no query string). Errors are client errors (400).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, &'static str> {
    let p = path.as_bytes();
    if p.first() != Some(&b'/') {
        return Err("request path must start with '/'");
    }
    if !needs_work(p) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. percent-decoding of unreserved characters; other escapes kept, hex uppercased.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                p.get(i + 1).copied().and_then(hex),
                p.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("invalid percent-encoding in path");
            };
            let v = h * 16 + l;
            if is_unreserved(v) {
                decoded.push(v as char);
            } else {
                decoded.push('%');
                decoded.push(p[i + 1].to_ascii_uppercase() as char);
                decoded.push(p[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Safe: the input is a str and we copy whole UTF-8 sequences byte by byte.
            let ch_len = utf8_len(b);
            decoded.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    // 2. segments: drop empty and ".", pop on "..".
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split('/').skip(1) {
        trailing = false;
        match seg {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                segs.pop();
                trailing = true;
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let n = |p| normalize(p).unwrap().into_owned();
        assert_eq!(n("/a/b"), "/a/b");
        assert_eq!(n("//a///b"), "/a/b");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/a/%2e%2e/admin"), "/admin");
        assert_eq!(n("/a/%2E%2e/%2e/admin"), "/admin");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/"), "/a/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(
            n("/a%2fb"),
            "/a%2Fb",
            "encoded slash stays a byte of the segment"
        );
        assert_eq!(n("/caf\u{e9}//x"), "/caf\u{e9}/x");
        assert_eq!(n("/"), "/");
        assert!(normalize("/a%zz").is_err());
        assert!(normalize("/a%2").is_err());
        assert!(normalize("a/b").is_err());
        assert!(matches!(normalize("/plain/path"), Ok(Cow::Borrowed(_))));
    }
}
