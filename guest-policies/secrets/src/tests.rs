//! Unit tests; the gitleaks corpus check is in `tests/gitleaks.rs`.

use super::*;

fn rules_hit(text: &str) -> Vec<String> {
    let s = Scanner::builtin().unwrap();
    s.scan(text).into_iter().map(|f| f.rule).collect()
}

#[test]
fn at_least_150_formats_compile() {
    let s = Scanner::builtin().unwrap();
    assert!(s.rule_count() >= 150, "{} rules", s.rule_count());
}

#[test]
fn common_formats() {
    let cases = [
        ("export AWS_ACCESS_KEY_ID=AKIAZ7Q4MNB2XK5LPW3R", "aws-access-key-id"),
        ("token ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u", "github-pat"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
        ),
        (
            "const db = 'postgres://app:S3cr3tPassw0rd@db.internal:5432/prod'",
            "url-credentials",
        ),
        ("STRIPE=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe-key"),
    ];
    for (text, rule) in cases {
        assert_eq!(rules_hit(text), [rule], "{text}");
    }
}

#[test]
fn pem_keys_raw_and_json_escaped() {
    let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDAC4AWkdwKYSd8Ks14IReLcYgADhoXk";
    let raw = format!("-----BEGIN PRIVATE KEY-----\n{body}\n{body}\n-----END PRIVATE KEY-----\n");
    assert_eq!(rules_hit(&raw), ["private-key"]);
    let escaped = format!("key = \"-----BEGIN RSA PRIVATE KEY-----\\n{body}\\n-----END RSA PRIVATE KEY-----\"");
    assert_eq!(rules_hit(&escaped), ["private-key"]);
}

#[test]
fn generic_assignments() {
    for text in [
        "DB_PASSWORD=Tr0ub4dor&3xq9",
        "api_key: \"q8Zr4mT2xW9kLp3v\"",
        "System.setProperty(\"MY_TOKEN\", \"Zq83kfPq02mZx7Lw\")",
        "<authToken>\n   a8Kq2mZp9xW3vL7t\n</authToken>",
    ] {
        assert_eq!(rules_hit(text), ["generic-assignment"], "{text}");
    }
}

#[test]
fn hard_negatives_are_quiet() {
    for text in [
        "request_id = \"3f2b8c1e-9a4d-4e6f-b2c1-7d8e9f0a1b2c\"",
        "\"integrity\": \"sha512-7zYGVx0lQq1R4a1zXb5h2Y8k3Qx0w1e2r3t4y5u6i7o8p9a0s1d2f3g4h5j6k7l8==\"",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "api_key = os.environ[\"OPENAI_API_KEY\"]",
        "password: ${DB_PASSWORD}",
        "token_url = https://example.com/oauth/token",
        "public_key = \"9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit\"",
        "key_length = XSalsa20.key_length",
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        "OPENAI_API_KEY=sk-...",
        "api_key = \"<your-api-key>\"",
        "The access token expires after an hour; refresh it with the refresh token.",
        "max_tokens = 64000",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host",
    ] {
        assert!(rules_hit(text).is_empty(), "{text}: {:?}", rules_hit(text));
    }
}

#[test]
fn spans_cover_the_secret_only() {
    let s = Scanner::builtin().unwrap();
    let text = "x = ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u;";
    let f = &s.scan(text)[0];
    assert_eq!(&text[f.start..f.end], "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u");
    assert_eq!(f.category, "secret.github-token");
}

#[test]
fn config_disables_allows_and_adds_gitleaks_rules() {
    let text = "ticket SECRETCO-ab12cd34ef56 and ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u";
    let cfg = serde_json::json!({
        "disable": ["secret.github-token"],
        "gitleaks": "[[rules]]\nid = \"secretco\"\nregex = '''SECRETCO-([a-f0-9]{12})'''\nsecretGroup = 1\nkeywords = [\"secretco\"]\n",
    });
    let s = Scanner::from_json(&cfg.to_string()).unwrap();
    let found = s.scan(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].rule.as_str(), &text[found[0].start..found[0].end]),
        ("secretco", "ab12cd34ef56")
    );
    // An empty keyword beside a real one: the rule runs everywhere, not only near `zzz`.
    for keywords in [r#"["", "zzz"]"#, r#"["zzz", ""]"#] {
        let rule = format!(
            "[[rules]]\nid = \"secretco\"\nregex = '''SECRETCO-([a-f0-9]{{12}})'''\nsecretGroup = 1\nkeywords = {keywords}\n"
        );
        let cfg = serde_json::json!({"builtin": false, "gitleaks": rule});
        let s = Scanner::from_json(&cfg.to_string()).unwrap();
        let far = format!("zzz{}{text}", " filler".repeat(400));
        for hay in [text, far.as_str()] {
            assert_eq!(s.scan(hay).len(), 1, "{keywords}");
        }
    }
    let s = Scanner::from_json(r#"{"allow_values":["ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u"]}"#).unwrap();
    assert!(s.scan(text).is_empty());
    assert!(
        Scanner::from_json(r#"{"gitleaks":"[[rules]]\nid='x'\nregex='('"}"#)
            .err()
            .unwrap()
            .contains("gitleaks rule")
    );
}

#[test]
fn samples_are_told_from_credentials() {
    // The name says the value is a sample.
    assert!(rules_hit(r#"nonMatchingToken := "sm_aat_3fzdswl17b""#).is_empty());
    assert!(rules_hit(r#"FAKE_API_KEY = "Zq8vR2mXk4Lp9TnW""#).is_empty());
    assert_eq!(rules_hit(r#"API_KEY = "Zq8vR2mXk4Lp9TnW""#), ["generic-assignment"]);
    // Whole words, right before the secret word: these names hold real credentials.
    for name in [
        "EXAMPLE_APP_SECRET_KEY",
        "MOCK_SERVER_PASSWORD",
        "payments.mock.token",
        "sample-app.client-secret",
    ] {
        assert_eq!(
            rules_hit(&format!(r#"{name} = "Zq8vR2mXk4Lp9TnW""#)),
            ["generic-assignment"],
            "{name}"
        );
    }
    assert_eq!(
        rules_hit(r#"WIREMOCK_API_TOKEN = "Zq8vR2mXk4Lp9TnW""#),
        ["generic-assignment"]
    );
    assert_eq!(
        rules_hit(r#"CDN_INVALIDATION_TOKEN = "Zq8vR2mXk4Lp9TnW""#),
        ["generic-assignment"]
    );
    // Hex in both cases is an edited sample; one case is a key.
    assert!(rules_hit("meraki-api-key: acdeFf05b1a6d4c890237bf08c5e6e8d2b4d0f2e").is_empty());
    assert_eq!(
        rules_hit("meraki-api-key: acdeff05b1a6d4c890237bf08c5e6e8d2b4d0f2e"),
        ["generic-assignment"]
    );
    // A weak password with a counting run in it is still a password.
    assert_eq!(rules_hit(r#"DB_PASSWORD="P@ss12345678""#), ["generic-assignment"]);
    // Weak passwords are passwords; a masked tail is not.
    assert!(!is_placeholder(b"Tr0ub4dor####2024", false), "`####` inside a value");
    assert!(is_placeholder(b"xoxp-572370529330-########", false), "a masked tail");
    for pw in ["admin_12345678", "qwerty-1234567890"] {
        assert_eq!(
            rules_hit(&format!(r#"DB_PASSWORD="{pw}""#)),
            ["generic-assignment"],
            "{pw}"
        );
    }
    // Sumo Logic's name is a word of its own: `sumObj` is a sum.
    assert!(rules_hit("sumObj = suGyI5imvADdvU").is_empty());
    assert_eq!(rules_hit("sumo_access_id = suGyI5imvADdvU"), ["sumologic-context"]);
    assert_eq!(rules_hit("sUMO_ACCESS_ID = suGyI5imvADdvU"), ["sumologic-context"]);
    // … and camelCase or bare names, with any separator, are Sumo Logic's (an adversarial pass
    // found the word-boundary version let these through).
    for text in [
        "sumoAccessId: suGyI5imvADdvU",
        "SumoAccessId = suGyI5imvADdvU",
        "SUMO=suGyI5imvADdvU",
        "sumo: suGyI5imvADdvU",
        "sumo:suGyI5imvADdvU",
        "SUMO=aq7hgk3ho1b3ahdxqwinv9ghxefplc0qmcnquv2fxa0n7ukjvvpmzwg3cntxyvze",
    ] {
        assert_eq!(rules_hit(text), ["sumologic-context"], "{text}");
    }
    // A Slack token followed by `-` is still a Slack token; a short NuGet password still a password.
    assert_eq!(
        rules_hit("xoxb-263594206564-2343594206574-FGqddMF8t08v8N7Oq4i57vs1-"),
        ["slack-token"]
    );
    assert_eq!(
        rules_hit(r#"<add key="ClearTextPassword" value="hunter2" />"#),
        ["nuget-config-password"]
    );
}
