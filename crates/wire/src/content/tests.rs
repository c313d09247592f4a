use super::*;

fn segs(body: &str) -> Vec<(String, String, &'static str)> {
    json(body.as_bytes(), Shape::Request, &BodyLimits::default())
        .unwrap_or_else(|e| panic!("{}: {body}", e.message))
        .segments
        .into_iter()
        .map(|s| (s.path, s.text.into_owned(), s.origin.as_str()))
        .collect()
}

fn texts(body: &str) -> String {
    segs(body).into_iter().map(|s| s.1).collect::<Vec<_>>().join("\n")
}

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

#[test]
fn anthropic_messages_structure_is_skipped_content_is_not() {
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","system":[{{"type":"text","text":"sys","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}],
        "tools":[{{"name":"Bash","description":"runs commands","input_schema":{{"type":"object","properties":{{"command":{{"type":"string","description":"the command"}}}}}}}}],
        "messages":[{{"role":"user","content":"hi \"there\""}},
          {{"role":"assistant","content":[{{"type":"thinking","thinking":"hmm","signature":"EqQBCkYIBxgCKkBjZXJ0YWlubHkgYSBzaWduYXR1cmU="}},{{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"Bash","input":{{"command":"cat .env"}}}}]}},
          {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01A09q90qw90lq917835lq9","content":[{{"type":"text","text":"KEY=v"}}]}},
            {{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{PNG}"}}}}]}}],
        "metadata":{{"user_id":"u-1"}}}}"#
    );
    let got = segs(&body);
    let find = |path: &str| {
        got.iter()
            .find(|s| s.0 == path)
            .unwrap_or_else(|| panic!("{path}: {got:#?}"))
    };
    assert_eq!(find("system[0].text").1, "sys");
    assert_eq!(find("system[0].text").2, "system");
    assert_eq!(find("messages[0].content").1, "hi \"there\"");
    assert_eq!(find("messages[1].content[0].thinking").1, "hmm");
    assert_eq!(find("messages[1].content[1].input").1, "command: cat .env");
    assert_eq!(find("messages[1].content[1].input").2, "tool-input");
    assert_eq!(find("messages[2].content[0].content[0].text").2, "tool-result");
    assert_eq!(find("metadata").1, "user_id: u-1");
    assert_eq!(find("metadata").2, "metadata");
    // Tool definitions are scanned, schemas whole.
    assert_eq!(find("tools[0].description").1, "runs commands");
    assert_eq!(find("tools[0].description").2, "tool-definition");
    assert!(texts(&body).contains("description: the command"));
    let all = texts(&body);
    for structural in ["ephemeral", "image/png", PNG, "\"thinking\""] {
        assert!(!all.contains(structural), "{structural} was scanned: {all}");
    }
    // Ids and signatures are scanned: a value there could be anything (the review's finding).
    for scanned in ["toolu_01A09", "EqQBCkYIBxgC"] {
        assert!(all.contains(scanned), "{scanned} was not scanned");
    }
}

#[test]
fn structure_shaped_values_in_free_data_are_scanned() {
    const TOKEN: &str = "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u";
    // A tool input with the keys the API uses for structure: all of it is the tool's data.
    let body = format!(
        r#"{{"messages":[{{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_1","name":"x","input":{{"type":"{TOKEN}","signature":"{TOKEN}","id":"{TOKEN}","data":"{TOKEN}","role":"{TOKEN}"}}}}]}}]}}"#
    );
    let t = texts(&body);
    assert_eq!(t.matches(TOKEN).count(), 5, "{t}");
    // Structure keys with values of the wrong shape are content.
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":[{{"type":"{TOKEN}","text":"a"}},{{"type":"text","text":"b","id":"{TOKEN}"}},
        {{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{TOKEN}"}}}},
        {{"type":"thinking","thinking":"t","signature":"not base64 at all!"}}]}}]}}"#
    );
    let t = texts(&body);
    assert_eq!(t.matches(TOKEN).count(), 3, "{t}");
    assert!(t.contains("not base64 at all!"), "{t}");
    // A data URI that says PNG but is not one is text.
    let body = r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,Z2hwX1I4eGsyTG1ROXZUejRXY1k3bkIzcEo2aEYxc0Q1Z0EwZUsydQ=="}}]}]}"#;
    assert!(texts(body).contains("Z2hwX1I4"), "a fake PNG is scanned");
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{PNG}"}}}}]}}]}}"#
    );
    assert!(!texts(&body).contains(PNG), "a real PNG is skipped");
    // Unknown members anywhere: key and value.
    let t = texts(&format!(
        r#"{{"messages":[{{"role":"user","content":"x","x_secret":"{TOKEN}"}}],"{TOKEN}":1}}"#
    ));
    assert!(t.contains(&format!("x_secret: {TOKEN}")), "{t}");
}

#[test]
fn every_content_field_of_every_family_is_scanned() {
    let cases = [
        // OpenAI chat: messages, tools, response_format schema, prediction, metadata, user, stop.
        (
            r#"{"model":"gpt-5","messages":[{"role":"developer","content":"D1"},{"role":"user","content":[{"type":"text","text":"D2"}]},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"q\":\"D3\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"D4"}],
            "tools":[{"type":"function","function":{"name":"f","description":"D5","parameters":{"type":"object","properties":{"q":{"description":"D6"}}}}}],
            "response_format":{"type":"json_schema","json_schema":{"name":"D7","schema":{}}},"prediction":{"type":"content","content":"D8"},"metadata":{"k":"D9"},"user":"D10","stop":["D11"]}"#,
            11,
        ),
        // OpenAI completions: prompt and suffix.
        (
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":["D1","D2"],"suffix":"D3"}"#,
            3,
        ),
        // Responses: input items of every kind, instructions, tools, text format, include.
        (
            r#"{"model":"gpt-5","instructions":"D1","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"D2"},{"type":"input_file","filename":"D3","file_data":"D4"}]},{"type":"function_call","call_id":"call_9","name":"D5","arguments":"D6"},{"type":"function_call_output","call_id":"call_9","output":"D7"},{"type":"reasoning","summary":[{"type":"summary_text","text":"D8"}]},{"type":"custom_tool_call_output","call_id":"call_8","output":[{"type":"input_text","text":"D9"}]}],
            "tools":[{"type":"function","name":"f","description":"D10","parameters":{}}],"text":{"format":{"type":"json_schema","name":"D11","schema":{}}},"prompt_cache_key":"D12"}"#,
            12,
        ),
        // Embeddings and moderations.
        (r#"{"model":"text-embedding-3-small","input":["D1","D2"]}"#, 2),
        (
            r#"{"model":"omni-moderation-latest","input":[{"type":"text","text":"D1"}]}"#,
            1,
        ),
        // Anthropic: MCP servers, container, stop sequences, tool choice, context management.
        (
            r#"{"model":"claude-x","max_tokens":1,"messages":[{"role":"user","content":"D1"}],"mcp_servers":[{"type":"url","url":"https://D2","name":"D3","authorization_token":"D4"}],"stop_sequences":["D5"],"tool_choice":{"type":"tool","name":"D6"},"container":"D7"}"#,
            7,
        ),
        // Bedrock Converse.
        (
            r#"{"messages":[{"role":"user","content":[{"text":"D1"},{"document":{"format":"txt","name":"D2","source":{"text":"D3"}}},{"toolResult":{"toolUseId":"tooluse_1","content":[{"text":"D4"},{"json":{"k":"D5"}}]}}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"tooluse_1","name":"D6","input":{"q":"D7"}}},{"reasoningContent":{"reasoningText":{"text":"D8","signature":"c2lnbmF0dXJlc2lnbmF0dXJl"}}}]}],
            "system":[{"text":"D9"}],"toolConfig":{"tools":[{"toolSpec":{"name":"n","description":"D10","inputSchema":{"json":{}}}}]},"additionalModelRequestFields":{"x":"D11"},"inferenceConfig":{"maxTokens":5,"stopSequences":["D12"]}}"#,
            12,
        ),
    ];
    for (body, n) in cases {
        let t = texts(body);
        for i in 1..=n {
            assert!(t.contains(&format!("D{i}")), "D{i} not scanned in {body}\n---\n{t}");
        }
    }
}

#[test]
fn lone_surrogates_are_scanned_both_ways() {
    let got = segs(r#"{"messages":[{"role":"user","content":"ghp_R8xk2LmQ9vTz4W\uD83DcY7nB3pJ6hF1sD5gA0eK2u"}]}"#);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, "ghp_R8xk2LmQ9vTz4W\u{FFFD}cY7nB3pJ6hF1sD5gA0eK2u");
    assert_eq!(got[1].1, "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u");
    let got = segs(r#"{"metadata":{"k":"a\uDC00b"}}"#);
    assert_eq!(
        got.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["k: a\u{FFFD}b", "k: ab"]
    );
}

#[test]
fn facts_take_the_largest_bound() {
    let f = |body: &str| json(body.as_bytes(), Shape::Request, &BodyLimits::default()).map(|e| e.facts);
    let facts =
        f(r#"{"model":"claude-opus-5-5","stream":true,"max_tokens":100,"max_output_tokens":"5000","messages":[]}"#)
            .unwrap();
    assert_eq!(
        (facts.model.as_deref(), facts.stream, facts.max_tokens),
        (Some("claude-opus-5-5"), true, Some(5000))
    );
    assert_eq!(
        f(r#"{"inferenceConfig":{"maxTokens":700}}"#).unwrap().max_tokens,
        Some(700)
    );
    assert_eq!(
        f(r#"{"textGenerationConfig":{"maxTokenCount":9}}"#).unwrap().max_tokens,
        Some(9)
    );
    assert_eq!(f(r#"{"max_tokens":6.4e4}"#).unwrap().max_tokens, Some(64000));
    assert_eq!(f(r#"{"n":4,"max_completion_tokens":10}"#).unwrap().choices, 4);
    for bad in [
        r#"{"max_tokens":-1}"#,
        r#"{"max_tokens":1.5}"#,
        r#"{"max_tokens":"lots"}"#,
        r#"{"max_tokens":[1]}"#,
        r#"{"n":true}"#,
    ] {
        let e = f(bad).unwrap_err();
        assert!(
            !e.too_large && e.message.contains("whole number"),
            "{bad}: {}",
            e.message
        );
    }
    let facts = f(r#"{"service_tier":"priority","speed":"fast","inference_geo":"us"}"#).unwrap();
    assert_eq!(
        (facts.billing.tier, facts.billing.fast, facts.billing.us_only),
        (Tier::Priority, true, true)
    );
    // Inputs the body does not carry.
    for unbounded in [
        r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"file","file_id":"file_011"}}]}]}"#,
        r#"{"input":[{"type":"message","role":"user","content":[{"type":"input_file","file_id":"file-abc"}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
        r#"{"mcp_servers":[{"type":"url","url":"https://mcp"}]}"#,
        r#"{"previous_response_id":"resp_1","input":"x"}"#,
        r#"{"tools":[{"type":"file_search"}]}"#,
    ] {
        assert!(f(unbounded).unwrap().unbounded_input, "{unbounded}");
    }
    assert!(
        !f(r#"{"messages":[{"role":"user","content":"x"}]}"#)
            .unwrap()
            .unbounded_input
    );
    // Server-side search: max_uses bounds the fee; without it, the output does.
    let w =
        f(r#"{"max_tokens":1600,"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":8}]}"#).unwrap();
    assert_eq!((w.web_searches, w.unbounded_input), (8, true));
    let w = f(r#"{"max_tokens":1600,"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#).unwrap();
    assert_eq!(w.web_searches, 1600 / MIN_TOKENS_PER_TOOL_CALL);
}

#[test]
fn batches_carry_each_requests_facts() {
    let body = r#"{"requests":[{"custom_id":"a1","params":{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"Q1"}]}},
        {"custom_id":"a2","params":{"model":"claude-opus-5-5","max_tokens":20,"messages":[{"role":"user","content":"Q2"}]}}]}"#;
    let e = json(body.as_bytes(), Shape::AnthropicBatch, &BodyLimits::default()).unwrap();
    assert_eq!(e.requests.len(), 2);
    assert_eq!(e.requests[1].model.as_deref(), Some("claude-opus-5-5"));
    assert_eq!(e.requests[1].max_tokens, Some(20));
    let t: Vec<&str> = e.segments.iter().map(|s| s.text.as_ref()).collect();
    assert!(
        t.contains(&"Q1") && t.contains(&"Q2") && t.iter().any(|s| s.contains("a2")),
        "{t:?}"
    );
    assert_eq!(
        e.segments.iter().find(|s| s.text == "Q2").unwrap().path,
        "requests[1].params.messages[0].content"
    );
    let e = json(
        br#"{"requests":[{"custom_id":"a"}]}"#,
        Shape::AnthropicBatch,
        &BodyLimits::default(),
    )
    .unwrap_err();
    assert!(e.message.contains("params"), "{}", e.message);
}

#[test]
fn limits_refuse_never_truncate() {
    let many: Vec<String> = (0..300).map(|i| format!("\"s{i}\"")).collect();
    let body = format!(r#"{{"messages":[{{"role":"user","content":[{}]}}]}}"#, many.join(","));
    let small = BodyLimits {
        max_segments: 100,
        ..BodyLimits::default()
    };
    let e = json(body.as_bytes(), Shape::Request, &small).unwrap_err();
    assert!(
        e.too_large && e.message.contains("limits.max_text_values"),
        "{}",
        e.message
    );
    let deep = format!(
        r#"{{"messages":[{{"role":"user","content":[{{"type":"tool_use","input":{}1{}}}]}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let e = json(deep.as_bytes(), Shape::Request, &BodyLimits::default()).unwrap_err();
    assert!(
        !e.too_large && e.message.contains("limits.max_json_depth"),
        "{}",
        e.message
    );
    for bad in [
        &b"[1]"[..],
        b"\"x\"",
        b"{\"model\":\"a\",\"model\":\"b\"}",
        b"{\"a\":\"\xff\"}",
        b"not json",
    ] {
        assert!(
            json(bad, Shape::Request, &BodyLimits::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn text_is_chunked_with_overlap() {
    let big = "a".repeat((1 << 20) + 10) + "SECRETSPANNINGTHEBOUNDARY";
    let segs = text(big.as_bytes(), "file.content", Origin::File, &BodyLimits::default()).unwrap();
    assert_eq!(segs.len(), 2);
    assert!(segs[1].text.ends_with("SECRETSPANNINGTHEBOUNDARY"));
    assert!(segs[1].text.len() > 4096);
    let lossy = text(b"ab\xffcd", "f", Origin::File, &BodyLimits::default()).unwrap();
    assert_eq!(lossy[0].text, "ab\u{FFFD}cd");
}

/// Property: a canary secret placed at a random string position (value or key) of random JSON —
/// random nesting, escapes, surrogates, key orders — is in some segment, or the body is refused.
#[test]
fn a_canary_anywhere_is_scanned_or_the_body_refused() {
    let mut bodies = canary::Bodies::new(0xc0ffee);
    let mut refused = 0;
    for round in 0..3000 {
        let body = bodies.next_body();
        match json(body.as_bytes(), Shape::Request, &BodyLimits::default()) {
            Err(_) => refused += 1,
            Ok(e) => {
                let found = e.segments.iter().any(|s| s.text.contains(canary::CANARY));
                assert!(found, "round {round}: canary not scanned in {body}\n{:#?}", e.segments);
            }
        }
    }
    assert!(refused < 300, "most bodies are valid ({refused} refused)");
}

/// Reading with a recall gives the same segments as without (nothing remembered), and only
/// objects and arrays — at most `MAX_PARTS` — become parts: a body of many tiny elements costs
/// no more hashing and memo work than that.
#[test]
fn parts_are_containers_and_bounded_and_read_the_same() {
    struct Nothing;
    impl Recall for Nothing {
        fn recall(&self, _: &PartKey) -> Option<PartSummary> {
            None
        }
    }
    let mut messages: Vec<String> = (0..MAX_PARTS + 100)
        .map(|i| format!(r#"{{"role":"user","content":"message {i}"}}"#))
        .collect();
    messages.push(r#""a bare string""#.into());
    let body = format!(
        r#"{{"model":"m","max_tokens":1,"system":"plain","messages":[{}]}}"#,
        messages.join(",")
    );
    let limits = BodyLimits::default();
    let plain = json(body.as_bytes(), Shape::Request, &limits).unwrap();
    let read = json_recalling(body.as_bytes(), Shape::Request, &limits, Some(&Nothing)).unwrap();
    assert_eq!(read.segments, plain.segments);
    assert_eq!(read.facts, plain.facts);
    assert!(plain.parts.is_empty(), "no recall, no parts");
    assert_eq!(read.parts.len(), MAX_PARTS);
    assert_eq!(read.parts[0].path, "messages[0]");
    assert_eq!(
        read.parts[0].segments,
        2..3,
        "after `model` and `system`, one segment each"
    );
    assert!(
        read.parts
            .iter()
            .all(|p| p.path.starts_with("messages[") && p.summary.segments == 1)
    );
}

/// The bound holds for every kind of part: a batch whose every item carries its own `tools`
/// (each one part) is read as parts only up to `MAX_PARTS`.
#[test]
fn tool_definition_parts_are_bounded_too() {
    struct Nothing;
    impl Recall for Nothing {
        fn recall(&self, _: &PartKey) -> Option<PartSummary> {
            None
        }
    }
    let items: Vec<String> = (0..MAX_PARTS + 50)
        .map(|i| {
            format!(r#"{{"custom_id":"c{i}","params":{{"model":"m","max_tokens":1,"tools":[{{"name":"t{i}"}}]}}}}"#)
        })
        .collect();
    let body = format!(r#"{{"requests":[{}]}}"#, items.join(","));
    let limits = BodyLimits::default();
    let plain = json(body.as_bytes(), Shape::AnthropicBatch, &limits).unwrap();
    let read = json_recalling(body.as_bytes(), Shape::AnthropicBatch, &limits, Some(&Nothing)).unwrap();
    assert_eq!(read.parts.len(), MAX_PARTS);
    assert_eq!(read.segments, plain.segments);
    assert_eq!(read.parts[0].path, "requests[0].params.tools");
}
