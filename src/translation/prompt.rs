//! The two prompt formats: the original study's `"{SRC}: {src} {TGT}: {tgt}"` (language
//! codes) and the second format's language names.

use crate::translation::data::SentencePair;

/// The prompt of the original study: `"{SRC}: {src} {TGT}: {tgt}"`, codes in capitals.
pub fn prompt(src_lang: &str, tgt_lang: &str, pair: &SentencePair) -> String {
    format!(
        "{}: {} {}: {}",
        src_lang.to_uppercase(),
        pair.src,
        tgt_lang.to_uppercase(),
        pair.tgt
    )
}

/// The teacher-forced prompt of a pair, `"{SRC}: {src} {TGT}:"`: the original prompt up to
/// the target sentence, which follows as the continuation `" {tgt}"`.
pub fn forced_prompt(src_lang: &str, tgt_lang: &str, pair: &SentencePair) -> String {
    format!(
        "{}: {} {}:",
        src_lang.to_uppercase(),
        pair.src,
        tgt_lang.to_uppercase()
    )
}

/// The English name of a language code, for the `Names` prompt format.
pub fn language_name(code: &str) -> Option<&'static str> {
    Some(match code.to_lowercase().as_str() {
        "en" => "English",
        "fr" => "French",
        "de" => "German",
        "es" => "Spanish",
        "it" => "Italian",
        "pt" => "Portuguese",
        "nl" => "Dutch",
        "ru" => "Russian",
        "pl" => "Polish",
        "uk" => "Ukrainian",
        "tr" => "Turkish",
        "ja" => "Japanese",
        "zh" | "cmn" => "Chinese",
        "ko" => "Korean",
        "ar" => "Arabic",
        "he" => "Hebrew",
        "hi" => "Hindi",
        "vi" => "Vietnamese",
        "sv" => "Swedish",
        "fi" => "Finnish",
        "el" => "Greek",
        "cs" => "Czech",
        "hu" => "Hungarian",
        "id" => "Indonesian",
        _ => return None,
    })
}
