//! Prompts and scoring for Med-VQA evaluation, as the reference scorers do it.
//!
//! Multiple choice (HuatuoGPT-Vision's Medical_Multimodal_Evaluation_Data): the options are
//! listed as "A. ...", the prompt asks "Answer with the option's letter from the given choices
//! directly.", and a response is matched by option letter, then by option text, then to the
//! closest option. Closed questions: yes/no match; open questions: normalised exact match.

use super::dataset::Sample;

pub const MULTIPLE_CHOICE_SUFFIX: &str =
    "Answer with the option's letter from the given choices directly.";

pub fn kind(sample: &Sample) -> &'static str {
    if !sample.options.is_empty() {
        "multiple-choice"
    } else if sample.answer_type.as_deref() == Some("closed")
        || is_yes_no(sample.answer.as_deref().unwrap_or(""))
    {
        "closed"
    } else {
        "open"
    }
}

fn is_yes_no(text: &str) -> bool {
    matches!(normalise(text).as_str(), "yes" | "no")
}

/// The instruction appended in the model's chat format.
pub fn suffix_for(sample: &Sample) -> &'static str {
    if sample.options.is_empty() {
        crate::grounding::refine::ANSWER_SUFFIX
    } else {
        MULTIPLE_CHOICE_SUFFIX
    }
}

fn letter(index: usize) -> char {
    (b'A' + index as u8) as char
}

/// The question with its options listed.
pub fn question_text(sample: &Sample) -> String {
    if sample.options.is_empty() {
        return sample.question.clone();
    }
    let mut text = sample.question.clone();
    for (i, option) in sample.options.iter().enumerate() {
        text.push_str(&format!("\n{}. {}", letter(i), option));
    }
    text
}

/// Lowercase, punctuation to spaces, whitespace collapsed.
pub fn normalise(text: &str) -> String {
    let cleaned: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Character-level similarity in 0..1 (1 - normalised Levenshtein distance).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            current[j + 1] = (previous[j] + usize::from(ca != cb))
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    1.0 - previous[b.len()] as f64 / a.len().max(b.len()) as f64
}

/// The option index a multiple-choice response picks.
pub fn chosen_option(response: &str, options: &[String]) -> Option<usize> {
    let trimmed = response.trim().trim_start_matches(['(', '[', ' ']);
    let mut chars = trimmed.chars();
    if let Some(first) = chars.next() {
        let next = chars.next();
        let letter_index = (first.to_ascii_uppercase() as u8).wrapping_sub(b'A') as usize;
        let standalone = next.is_none_or(|c| !c.is_alphanumeric());
        if first.is_ascii_alphabetic() && standalone && letter_index < options.len() {
            return Some(letter_index);
        }
    }
    let response_norm = normalise(response);
    if let Some(index) = options
        .iter()
        .position(|o| !normalise(o).is_empty() && response_norm.contains(&normalise(o)))
    {
        return Some(index);
    }
    (0..options.len()).max_by(|&a, &b| {
        similarity(&response_norm, &normalise(&options[a]))
            .total_cmp(&similarity(&response_norm, &normalise(&options[b])))
    })
}

/// The expected option: `answer` as a letter, or the option it equals.
fn expected_option(sample: &Sample) -> Option<usize> {
    let answer = sample.answer.as_deref()?;
    let norm = normalise(answer);
    if let Some(index) = sample.options.iter().position(|o| normalise(o) == norm) {
        return Some(index);
    }
    let letter = answer.trim().chars().next()?.to_ascii_uppercase();
    let index = (letter as u8).wrapping_sub(b'A') as usize;
    (answer.trim().len() <= 2 && index < sample.options.len()).then_some(index)
}

/// Whether `response` answers `sample` correctly.
pub fn correct(sample: &Sample, response: &str) -> bool {
    let Some(expected) = sample.answer.as_deref() else {
        return false;
    };
    match kind(sample) {
        "multiple-choice" => expected_option(sample)
            .is_some_and(|e| chosen_option(response, &sample.options) == Some(e)),
        "closed" => {
            let first = normalise(response)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            first == normalise(expected)
        }
        _ => normalise(response) == normalise(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(options: &[&str], answer: &str) -> Sample {
        Sample {
            index: 0,
            image: Default::default(),
            image_name: String::new(),
            question: "Which organ?".into(),
            answer: Some(answer.into()),
            options: options.iter().map(|s| s.to_string()).collect(),
            answer_type: None,
            modality: String::new(),
            dataset: String::new(),
            boxes: Vec::new(),
        }
    }

    #[test]
    fn multiple_choice_by_letter_text_and_closest() {
        let s = sample(&["Liver", "Spleen", "Left kidney"], "Spleen");
        assert!(correct(&s, "B"));
        assert!(correct(&s, "(B) Spleen"));
        assert!(!correct(&s, "A."));
        assert!(correct(&s, "The answer is spleen"));
        assert!(correct(&s, "splen"), "closest option");
        assert_eq!(
            question_text(&s),
            "Which organ?\nA. Liver\nB. Spleen\nC. Left kidney"
        );
        let by_letter = sample(&["Liver", "Spleen"], "A");
        assert!(correct(&by_letter, "Liver"));
    }

    #[test]
    fn closed_and_open() {
        let closed = sample(&[], "Yes");
        assert!(correct(&closed, "yes, there is"));
        assert!(!correct(&closed, "no"));
        let open = sample(&[], "left lung");
        assert!(correct(&open, "Left lung."));
        assert!(!correct(&open, "right lung"));
        assert!((similarity("kitten", "sitting") - (1.0 - 3.0 / 7.0)).abs() < 1e-12);
    }
}
