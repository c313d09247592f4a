//! The browser leg's pages: the code confirmation form and the outcome pages. Plain HTML, no
//! script; every value is escaped; served with a CSP that allows no script, no frame, and form
//! posts only to this gateway (and the redirect on to the IdP).

/// HTML-escapes text for an element body or a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#222}\
h1{font-size:1.4em}.code{font:600 2em ui-monospace,monospace;letter-spacing:.15em;margin:.6em 0}\
input[name=user_code]{font:1.4em ui-monospace,monospace;letter-spacing:.1em;width:10em;text-transform:uppercase}\
button{font-size:1em;padding:.5em 1.2em;margin:.8em .6em 0 0}.warn{background:#fff4e5;padding:.6em .8em;border-radius:4px}\
.err{color:#a00}.meta{color:#666;font-size:.9em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

/// The confirmation form: the code (pre-filled from the link, never auto-submitted — RFC 8628
/// §5.4), Approve and Deny.
pub fn confirm(user_code: Option<&str>, csrf: &str, error: Option<&str>, notice: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let notice = notice
        .map(|n| format!("<p class=\"meta\">{}</p>", escape(n)))
        .unwrap_or_default();
    let code = escape(user_code.unwrap_or_default());
    page(
        "Sign in to Conduit",
        &format!(
            "<h1>Sign in to Conduit</h1>\
<p>A tool on your computer (Claude Code, <code>conduit login</code>) asked to sign in as you.</p>\
<p class=\"warn\"><strong>Continue only if this code is the one your terminal shows, and you started this sign-in yourself.</strong> \
If someone sent you this link, choose Deny.</p>{error}\
<form method=\"post\" action=\"/device\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Code <input name=\"user_code\" value=\"{code}\" placeholder=\"XXXX-XXXX\" maxlength=\"9\" autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" required></label><br>\
<button type=\"submit\" name=\"action\" value=\"approve\">Continue to sign in</button>\
<button type=\"submit\" name=\"action\" value=\"deny\" formnovalidate>Deny</button>\
</form>{notice}",
            csrf = escape(csrf),
        ),
    )
}

/// An outcome page.
pub fn outcome(title: &str, message: &str) -> String {
    page(title, &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let html = confirm(Some("\"><script>x</script>"), "c\"sr", Some("<b>"), None);
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("&quot;&gt;&lt;script&gt;") && html.contains("c&quot;sr") && html.contains("&lt;b&gt;"));
        assert!(!html.contains("<script"), "no script at all");
    }
}
