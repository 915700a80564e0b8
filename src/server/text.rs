//! Cutting the judged response out of what a trainer sends: OpenRLHF's `query` is the decoded
//! prompt + response (special tokens kept, prompts left-truncated when too long, left padding in
//! older versions), slime's `response` is the response alone. The rules here decide what the
//! judge reads, so a prompt that holds the gold answer must never be judged as the answer.

/// Special tokens cut anywhere at the end of a response, besides every `<|...|>` and `<｜...｜>`
/// token (`<|im_end|>`, `<|eot_id|>`, `<|return|>`, `<|finetune_right_pad_id|>`, ...), which are
/// recognised by shape.
const END_TOKENS: [&str; 8] = ["<end_of_turn>", "<eos>", "<pad>", "</s>", "[PAD]", "[SEP]", "<|end|>", "<eot>"];

/// Where an assistant turn starts in the chat templates trainers use; the last one in a query
/// marks the response when the prompt itself cannot be found.
const ASSISTANT_STARTS: [&str; 8] = [
    "<|im_start|>assistant\n",
    "<|im_start|>assistant",
    "<|start_header_id|>assistant<|end_header_id|>",
    "<start_of_turn>model",
    "<|start|>assistant",
    "<|assistant|>",
    "<｜Assistant｜>",
    "[/INST]",
];

/// gpt-oss (harmony) answers after its analysis channel; the final channel is the answer.
const FINAL_CHANNEL: &str = "<|channel|>final<|message|>";

/// The length in bytes of a special token that `text` starts with, if any: `<|...|>`,
/// `<｜...｜>` (no white space inside, at most 64 bytes) or one of [`END_TOKENS`].
fn special_at(text: &str) -> Option<usize> {
    for (open, close) in [("<|", "|>"), ("<｜", "｜>")] {
        if let Some(rest) = text.strip_prefix(open) {
            if let Some(end) = rest.find(close) {
                let inner = &rest[..end];
                if !inner.is_empty() && inner.len() <= 64 && !inner.contains(char::is_whitespace) {
                    return Some(open.len() + end + close.len());
                }
            }
        }
    }
    let starts = ["<s>", "<bos>"];
    END_TOKENS.iter().chain(starts.iter()).find(|t| text.starts_with(*t)).map(|t| t.len())
}

/// `text` without trailing special tokens and white space.
pub fn strip_end_tokens(mut text: &str) -> &str {
    loop {
        let trimmed = text.trim_end();
        let cut = trailing_special(trimmed).map_or(trimmed, |at| &trimmed[..at]);
        if cut.len() == text.len() {
            return text;
        }
        text = cut;
    }
}

/// Where a special token that ends `text` starts.
fn trailing_special(text: &str) -> Option<usize> {
    for (open, close) in [("<|", "|>"), ("<｜", "｜>")] {
        if let Some(body) = text.strip_suffix(close) {
            if let Some(at) = body.rfind(open) {
                if special_at(&text[at..]) == Some(text.len() - at) {
                    return Some(at);
                }
            }
        }
    }
    END_TOKENS.iter().find(|t| text.ends_with(*t)).map(|t| text.len() - t.len())
}

/// `text` with special tokens and white space dropped, and for each kept byte its offset in
/// `text` (so a match in the normalised text maps back to the original).
fn normalise(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut at = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if let Some(n) = special_at(&text[i..]) {
            i += n;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        if !c.is_whitespace() {
            out.push(c);
            at.extend((0..c.len_utf8()).map(|k| i + k));
        }
        i += c.len_utf8();
    }
    (out, at)
}

/// Map the end of a match in the normalised query (byte `end`) back to a byte offset in `query`.
fn original_end(at: &[usize], query: &str, end: usize) -> usize {
    if end == 0 {
        return 0;
    }
    let last = at[end - 1];
    last + query[last..].chars().next().map_or(1, char::len_utf8)
}

/// How the response was found in the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// No prompt given: the whole query.
    NoPrompt,
    /// The prompt, as sent, is in the query.
    Exact,
    /// The prompt is there up to special tokens and white space (decode differences).
    Normalised,
    /// The query starts inside the prompt (OpenRLHF cuts long prompts on the left).
    Truncated,
    /// After the query's last assistant turn marker.
    AssistantMarker,
}

/// The response inside `query`, given the `prompt` it was generated from. `Err` when the prompt
/// was given but neither it, its end, nor an assistant turn marker is in the query: judging the
/// whole query would judge the prompt too (a gold answer in the prompt would count).
pub fn response_text<'a>(query: &'a str, prompt: Option<&str>) -> Result<(&'a str, Split), String> {
    let (text, how) = match prompt.filter(|p| !p.trim().is_empty()) {
        None => (query, Split::NoPrompt),
        Some(p) => find_response(query, p).ok_or_else(|| {
            "the prompt was not found in the query (neither as sent, nor up to special tokens and white \
             space, nor its end after a left cut, nor an assistant turn marker), so the response cannot be told \
             apart from the prompt; send query = prompt + response"
                .to_string()
        })?,
    };
    let text = match text.rfind(FINAL_CHANNEL) {
        Some(at) => &text[at + FINAL_CHANNEL.len()..],
        None => text,
    };
    Ok((strip_end_tokens(text).trim_start(), how))
}

fn find_response<'a>(query: &'a str, prompt: &str) -> Option<(&'a str, Split)> {
    if let Some(at) = query.find(prompt) {
        return Some((&query[at + prompt.len()..], Split::Exact));
    }
    let (q, at) = normalise(query);
    let (p, _) = normalise(prompt);
    if !p.is_empty() {
        if let Some(i) = q.find(&p) {
            return Some((&query[original_end(&at, query, i + p.len())..], Split::Normalised));
        }
        if let Some(end) = truncated_prompt_end(&q, &p) {
            return Some((&query[original_end(&at, query, end)..], Split::Truncated));
        }
    }
    ASSISTANT_STARTS
        .iter()
        .filter_map(|m| query.rfind(m).map(|i| i + m.len()))
        .max()
        .map(|end| (&query[end..], Split::AssistantMarker))
}

/// Shortest tail of the prompt that still counts as the prompt's end, in bytes.
const MIN_TAIL: usize = 8;

/// When the (normalised) query starts with a tail of the (normalised) prompt, where that tail
/// ends in the query. The prompt's end (its last [`MIN_TAIL`].. 64 bytes) anchors the search.
fn truncated_prompt_end(q: &str, p: &str) -> Option<usize> {
    let anchor_len = floor_char(p, p.len().min(64));
    let anchor = &p[p.len() - anchor_len..];
    if anchor.len() >= MIN_TAIL.min(p.len()) {
        let mut from = 0;
        while let Some(i) = q[from..].find(anchor) {
            let end = from + i + anchor.len();
            if p.ends_with(&q[..end]) {
                return Some(end);
            }
            from += i + anchor.chars().next().map_or(1, char::len_utf8);
        }
    }
    // Less of the prompt is left than the anchor: the longest prompt tail the query starts with.
    (MIN_TAIL..anchor_len)
        .rev()
        .filter(|&k| p.is_char_boundary(p.len() - k))
        .find(|&k| q.starts_with(&p[p.len() - k..]))
}

/// The largest `n' <= n` such that the last `n'` bytes of `s` start on a char boundary.
fn floor_char(s: &str, n: usize) -> usize {
    let mut n = n;
    while n > 0 && !s.is_char_boundary(s.len() - n) {
        n -= 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(q: &str, p: Option<&str>) -> Result<(&'static str, Split), String> {
        response_text(Box::leak(q.to_string().into_boxed_str()), p)
    }

    #[test]
    fn exact_prompt_and_end_tokens() {
        let p = "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n";
        let q = format!("{p} Paris<|im_end|><|endoftext|><|endoftext|>");
        assert_eq!(cut(&q, Some(p)).unwrap(), ("Paris", Split::Exact));
        assert_eq!(cut("<pad><pad>P: x</s>", Some("P:")).unwrap().0, "x");
        assert_eq!(cut("  abc  ", None).unwrap(), ("abc", Split::NoPrompt));
        // gpt-oss and Llama 3.1 end and pad tokens, recognised by shape.
        assert_eq!(strip_end_tokens("42<|return|>"), "42");
        assert_eq!(strip_end_tokens("42<|eot_id|><|finetune_right_pad_id|><|finetune_right_pad_id|>"), "42");
        assert_eq!(strip_end_tokens("42<｜end▁of▁sentence｜>"), "42");
        assert_eq!(strip_end_tokens("a <|not a token|>"), "a <|not a token|>");
        assert_eq!(strip_end_tokens("x || y |>"), "x || y |>");
    }

    #[test]
    fn decode_differences_and_left_cut_prompts() {
        // The decoded query lost a space and gained pad tokens the prompt does not have.
        let p = "Question: what is 2 + 2 ?\nAnswer:";
        let q = "<|endoftext|><|endoftext|>Question: what is 2 + 2?\nAnswer: 4<|endoftext|>";
        assert_eq!(cut(q, Some(p)).unwrap(), ("4", Split::Normalised));
        // The prompt was cut on the left (too long); the gold answer is in the cut part.
        let p = "Context: the answer is Canberra. Many more words follow here. Question: capital of Australia?\nA:";
        let q = "words follow here. Question: capital of Australia?\nA: Sydney";
        assert_eq!(cut(q, Some(p)).unwrap(), ("Sydney", Split::Truncated));
        // Only a short tail of the prompt is left.
        let p = "a long prompt that ends with: Answer briefly.\nA:";
        assert_eq!(cut("iefly.\nA: Sydney", Some(p)).unwrap(), ("Sydney", Split::Truncated));
    }

    #[test]
    fn assistant_marker_or_an_error_never_the_whole_query() {
        let q = "<|im_start|>user\nThe answer is Canberra. Capital?<|im_end|>\n<|im_start|>assistant\nSydney<|im_end|>";
        assert_eq!(cut(q, Some("a prompt from another template")).unwrap(), ("Sydney", Split::AssistantMarker));
        let e = cut("The answer is Canberra. Sydney", Some("unrelated prompt text here")).unwrap_err();
        assert!(e.contains("prompt was not found"), "{e}");
        let harmony = "<|start|>assistant<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Canberra<|return|>";
        assert_eq!(cut(&format!("P{harmony}"), Some("P")).unwrap().0, "Canberra");
    }
}
