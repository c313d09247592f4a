//! `multipart/form-data` (RFC 7578), as file uploads send it: the parts, each with its field name,
//! file name, media type and bytes (borrowed from the body). Strict: CRLF line ends, a boundary
//! from the `Content-Type`, nothing but whitespace before the first part or after the last, and
//! bounded part count and header size — anything else is refused, since bytes Conduit does not
//! attribute to a part would still reach the provider.

/// One part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// `name` of `Content-Disposition: form-data`.
    pub name: String,
    /// `filename`, when the part is a file.
    pub filename: Option<String>,
    /// `Content-Type` of the part (lowercase, parameters dropped), if given.
    pub content_type: Option<String>,
    /// The part's bytes.
    pub body: &'a [u8],
    /// The part's header lines as sent (they reach the provider too: scanned).
    pub head: &'a str,
}

/// Most parts in one body.
pub const MAX_PARTS: usize = 64;
/// Most bytes of one part's headers.
const MAX_PART_HEAD: usize = 8192;

/// The boundary of a `multipart/form-data` content type, or why it has none.
pub fn boundary(content_type: Option<&str>) -> Result<String, String> {
    let ct = content_type.ok_or("the request has no content-type; uploads are multipart/form-data")?;
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "this endpoint takes multipart/form-data, but content-type is {:?}",
            media.chars().take(64).collect::<String>()
        ));
    }
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            let ok = (1..=70).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b));
            return if ok {
                Ok(v.to_string())
            } else {
                Err("the multipart boundary is not valid (RFC 2046: 1–70 characters)".into())
            };
        }
    }
    Err("the multipart content-type has no boundary".into())
}

/// Splits `body` into its parts.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let first = finder
        .find(body)
        .ok_or("the multipart body has no part (its boundary does not appear)")?;
    if !body[..first].iter().all(u8::is_ascii_whitespace) {
        return Err("the multipart body has text before its first part".into());
    }
    let mut parts = Vec::new();
    let mut at = first + delim.len();
    loop {
        let rest = &body[at..];
        if let Some(after) = rest.strip_prefix(b"--") {
            if !after.iter().all(u8::is_ascii_whitespace) {
                return Err("the multipart body has text after its closing boundary".into());
            }
            return Ok(parts);
        }
        let rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a multipart boundary is not followed by CRLF")?;
        let head_end = memchr::memmem::find(&rest[..rest.len().min(MAX_PART_HEAD + 4)], b"\r\n\r\n")
            .ok_or("a multipart part's headers are missing their end, or are over 8 KiB")?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| "a multipart part's headers are not text")?;
        let content_start = at + 2 + head_end + 4;
        let close = format!("\r\n{delim}");
        let len = memchr::memmem::find(&body[content_start..], close.as_bytes())
            .ok_or("the multipart body ends inside a part (no closing boundary)")?;
        if parts.len() == MAX_PARTS {
            return Err(format!("the multipart body has more than {MAX_PARTS} parts"));
        }
        parts.push(part(head, &body[content_start..content_start + len])?);
        at = content_start + len + close.len();
    }
}

fn part<'a>(head: &'a str, body: &'a [u8]) -> Result<Part<'a>, String> {
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in head.split("\r\n") {
        let (k, v) = line.split_once(':').ok_or("a multipart part header has no ':'")?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-disposition" => {
                let mut fields = v.split(';');
                if !fields.next().unwrap_or("").trim().eq_ignore_ascii_case("form-data") {
                    return Err("a multipart part is not form-data".into());
                }
                for f in fields {
                    let (fk, fv) = f.split_once('=').unwrap_or((f, ""));
                    let fv = fv.trim().trim_matches('"').to_string();
                    match fk.trim().to_ascii_lowercase().as_str() {
                        "name" => name = Some(fv),
                        "filename" => filename = Some(fv),
                        // `filename*` (RFC 2231) would name the file differently for servers that
                        // read it: refused, like any parameter this parser does not know.
                        other => {
                            return Err(format!(
                                "a multipart part's Content-Disposition has a parameter {:?} this gateway does not read; send name and filename only",
                                other.chars().take(32).collect::<String>()
                            ));
                        }
                    }
                }
            }
            "content-type" => {
                content_type = Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
            }
            "content-transfer-encoding" => {
                return Err("multipart parts with a content-transfer-encoding are not accepted (RFC 7578 §4.7)".into());
            }
            _ => {} // scanned with the head
        }
    }
    Ok(Part {
        name: name.ok_or("a multipart part has no name")?,
        filename,
        content_type,
        body,
        head,
    })
}

/// Whether a part is text Conduit can scan: a text media type (or JSON / JSONL / XML / YAML /
/// CSV), or no media type and valid UTF-8 without NUL bytes.
pub fn is_text(p: &Part<'_>) -> bool {
    match p.content_type.as_deref() {
        Some(t) if t.starts_with("text/") => true,
        Some(
            "application/json"
            | "application/jsonl"
            | "application/x-ndjson"
            | "application/x-jsonlines"
            | "application/xml"
            | "application/yaml"
            | "application/x-yaml"
            | "application/csv",
        ) => true,
        Some("application/octet-stream") | None => std::str::from_utf8(p.body).is_ok() && !p.body.contains(&0),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_refusals() {
        let ct = "multipart/form-data; boundary=----b0undary";
        let b = boundary(Some(ct)).unwrap();
        let body = b"------b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n------b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n\r\n------b0undary--\r\n";
        let parts = parse(body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].name.as_str(), parts[0].body), ("purpose", &b"batch"[..]));
        assert_eq!(parts[1].filename.as_deref(), Some("in.jsonl"));
        assert_eq!(parts[1].content_type.as_deref(), Some("application/jsonl"));
        assert_eq!(parts[1].body, b"{\"a\":1}\n");
        assert!(is_text(&parts[1]));
        for bad in [
            &b"junk------b0undary--"[..],
            b"------b0undary\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx",
            b"------b0undary\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n------b0undary--trailing",
            b"------b0undary\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n------b0undary--",
            b"no boundary here",
        ] {
            assert!(parse(bad, &b).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(boundary(Some("application/json")).is_err());
        assert!(boundary(Some("multipart/form-data")).is_err());
        let png = Part {
            name: "file".into(),
            filename: Some("a.png".into()),
            content_type: Some("image/png".into()),
            body: b"\x89PNG",
            head: "",
        };
        let star = b"------b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''in.jsonl\r\n\r\nx\r\n------b0undary--";
        assert!(parse(star, &b).unwrap_err().contains("filename*"));
        assert!(!is_text(&png));
    }

    /// Property: arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = conduit_core::testing::Rng(7);
        for _ in 0..20_000 {
            let body: Vec<u8> = (0..rng.below(200))
                .map(|_| {
                    let alphabet = b"-\r\nab:=;\"Content-Disposition form-data name";
                    alphabet[rng.below(alphabet.len())]
                })
                .collect();
            let _ = parse(&body, "ab");
        }
    }
}
