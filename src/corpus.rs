//! Text corpora for training and evaluating dictionaries: the multilingual corpus shipped in
//! `data/corpus/` (Universal Dependencies text, see its README) and a loader for the user's own
//! text, TSV, JSONL or a folder of them. Documents only; tokenizing is the caller's job.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::stats::Rng;

/// Which part of the shipped corpus: training text, or held-out text for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training text (`<lang>.train.txt`).
    Train,
    /// Held-out text (`<lang>.heldout.txt`), disjoint from the training text.
    HeldOut,
}

impl Split {
    /// The file-name part of this split: `train` or `heldout`.
    pub fn file_tag(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldOut => "heldout",
        }
    }
}

/// One document: its text and, where known, its language tag (`en`, `ja`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Language tag, when the source says it (the shipped corpus, a JSONL `lang` field).
    pub lang: Option<String>,
    /// The document's text, never empty.
    pub text: String,
}

/// An ordered list of documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Corpus {
    docs: Vec<Doc>,
}

/// What a file holds, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Tsv,
    Jsonl,
}

impl Corpus {
    /// A corpus of these documents, in this order.
    pub fn new(docs: Vec<Doc>) -> Self {
        Corpus { docs }
    }

    /// The folder that holds the shipped corpus (`data/corpus/` in the crate's source).
    pub fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus")
    }

    /// One split of the shipped corpus, every language, languages in alphabetical order.
    pub fn shipped(split: Split) -> Result<Corpus> {
        let dir = Corpus::shipped_dir();
        let suffix = format!(".{}.txt", split.file_tag());
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::io(
                format!(
                    "reading the shipped corpus folder {} (it comes with the crate's source)",
                    dir.display()
                ),
                e,
            )
        })?;
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(lang) = name.strip_suffix(&suffix) {
                files.push((lang.to_string(), path.clone()));
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::Invalid(format!(
                "{} holds no `*{suffix}` file: the shipped corpus is missing; restore data/corpus/ from the repository",
                dir.display()
            )));
        }
        let mut docs = Vec::new();
        for (lang, path) in files {
            let text = read_text(&path)?;
            docs.extend(parse_text(&text).map(|t| Doc {
                lang: Some(lang.clone()),
                text: t.to_string(),
            }));
        }
        Ok(Corpus { docs })
    }

    /// The documents of a file or folder: `.txt` (a non-empty line is a document), `.tsv`
    /// (every non-empty cell is a document), `.jsonl` (each line an object; its `text` field,
    /// else its only string field; an optional string `lang` field tags it), or a folder,
    /// whose `.txt`, `.tsv` and `.jsonl` files are read recursively in path order.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Corpus> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::io(
                format!(
                    "reading corpus {}: give a .txt, .tsv or .jsonl file or a folder of them",
                    path.display()
                ),
                e,
            )
        })?;
        let docs = if meta.is_dir() {
            let mut files = Vec::new();
            collect_files(path, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(Error::Invalid(format!(
                    "corpus folder {} holds no .txt, .tsv or .jsonl file",
                    path.display()
                )));
            }
            let mut docs = Vec::new();
            for f in &files {
                let format = format_of(f).unwrap_or(Format::Text);
                docs.extend(read_file(f, format)?);
            }
            docs
        } else {
            let format = format_of(path).ok_or_else(|| {
                Error::Invalid(format!(
                    "corpus file {} has an extension we do not read; use .txt (one document a line), .tsv or .jsonl",
                    path.display()
                ))
            })?;
            read_file(path, format)?
        };
        if docs.is_empty() {
            return Err(Error::Invalid(format!(
                "corpus {} holds no document (it is empty or only blank lines)",
                path.display()
            )));
        }
        Ok(Corpus { docs })
    }

    /// The documents, in order.
    pub fn docs(&self) -> &[Doc] {
        &self.docs
    }

    /// How many documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there is no document.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The language tags present, sorted (untagged documents add none).
    pub fn languages(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.docs.iter().filter_map(|d| d.lang.as_deref()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The documents tagged `lang`, in order; refused when no document has that tag.
    pub fn filter_lang(&self, lang: &str) -> Result<Corpus> {
        let docs: Vec<Doc> = self
            .docs
            .iter()
            .filter(|d| d.lang.as_deref() == Some(lang))
            .cloned()
            .collect();
        if docs.is_empty() {
            let have = self.languages();
            return Err(Error::Invalid(format!(
                "no document in the corpus has language `{lang}`; it has: {}",
                if have.is_empty() {
                    "no language tags".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
        Ok(Corpus { docs })
    }

    /// The documents' texts, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.docs.iter().map(|d| d.text.as_str())
    }

    /// Total size of the texts in bytes.
    pub fn total_bytes(&self) -> usize {
        self.docs.iter().map(|d| d.text.len()).sum()
    }

    /// The same documents in an order drawn from `seed` (the same seed, the same order).
    pub fn shuffled(&self, seed: u64) -> Corpus {
        let mut docs = self.docs.clone();
        let mut rng = Rng::new(seed);
        for i in (1..docs.len()).rev() {
            docs.swap(i, rng.below(i + 1));
        }
        Corpus { docs }
    }
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        None => Some(Format::Text),
        Some(e) => match e.to_ascii_lowercase().as_str() {
            "txt" | "text" => Some(Format::Text),
            "tsv" => Some(Format::Tsv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        },
    }
}

/// Files under `dir` with an extension we read; other files are not documents.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let p = entry
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.extension().is_some() && format_of(&p).is_some() {
            out.push(p);
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::io(
            format!(
                "reading corpus file {} (it must be UTF-8 text)",
                path.display()
            ),
            e,
        )
    })
}

fn read_file(path: &Path, format: Format) -> Result<Vec<Doc>> {
    let text = read_text(path)?;
    let untagged = |t: &str| Doc {
        lang: None,
        text: t.to_string(),
    };
    Ok(match format {
        Format::Text => parse_text(&text).map(untagged).collect(),
        Format::Tsv => parse_tsv(&text).map(untagged).collect(),
        Format::Jsonl => parse_jsonl(&text, path)?,
    })
}

/// A document per non-blank line, without its line ending or surrounding spaces.
fn parse_text(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// A document per non-blank cell of every row.
fn parse_tsv(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .flat_map(|l| l.split('\t'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// A document per JSON object line: `text`, else the only string field; `lang` tags it.
fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Invalid(format!("{}: not JSON ({e})", at())))?;
        let obj = value.as_object().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: expected a JSON object with a `text` field, got {}",
                at(),
                kind(&value)
            ))
        })?;
        let lang = match obj.get("lang") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "{}: `lang` must be a string, got {}",
                    at(),
                    kind(other)
                )))
            }
        };
        let text = match obj.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "{}: `text` must be a string, got {}",
                    at(),
                    kind(other)
                )))
            }
            None => {
                let strings: Vec<(&String, &str)> = obj
                    .iter()
                    .filter(|(k, _)| k.as_str() != "lang")
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
                    .collect();
                match strings.as_slice() {
                    [(_, s)] => s.to_string(),
                    _ => {
                        let keys: Vec<&str> = strings.iter().map(|(k, _)| k.as_str()).collect();
                        return Err(Error::Invalid(format!(
                            "{}: no `text` field and {} other string fields ({}); name the document's field `text`",
                            at(),
                            keys.len(),
                            keys.join(", ")
                        )));
                    }
                }
            }
        };
        if !text.trim().is_empty() {
            docs.push(Doc { lang, text });
        }
    }
    Ok(docs)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder under the system's temporary directory, unique to this test.
    fn scratch(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mechinterp-corpus-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn doc(lang: Option<&str>, text: &str) -> Doc {
        Doc {
            lang: lang.map(str::to_string),
            text: text.to_string(),
        }
    }

    #[test]
    fn text_lines_are_documents() {
        let got: Vec<&str> = parse_text("one doc\r\n\n  \ntwo docs  \n").collect();
        assert_eq!(got, ["one doc", "two docs"]);
    }

    #[test]
    fn every_tsv_cell_is_a_document() {
        let got: Vec<&str> = parse_tsv("a\tb\n\nc\t\td\n").collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
    }

    #[test]
    fn jsonl_reads_text_the_only_string_and_lang() {
        let p = Path::new("x.jsonl");
        let got = parse_jsonl(
            "{\"text\": \"hello\", \"id\": \"7\", \"lang\": \"en\"}\n\n{\"body\": \"bonjour\", \"n\": 3}\n",
            p,
        )
        .unwrap();
        assert_eq!(got, [doc(Some("en"), "hello"), doc(None, "bonjour")]);
    }

    #[test]
    fn jsonl_errors_name_the_file_and_line() {
        let p = Path::new("my/data.jsonl");
        let e = parse_jsonl("{\"text\": \"ok\"}\n{oops\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("my/data.jsonl line 2") && e.contains("not JSON"),
            "{e}"
        );
        let e = parse_jsonl("{\"a\": \"x\", \"b\": \"y\"}\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("a, b"), "{e}");
        let e = parse_jsonl("{\"text\": 3}\n", p).unwrap_err().to_string();
        assert!(e.contains("`text` must be a string"), "{e}");
        let e = parse_jsonl("[1]\n", p).unwrap_err().to_string();
        assert!(e.contains("an array"), "{e}");
    }

    #[test]
    fn folders_are_read_recursively_in_path_order() {
        let dir = scratch("folder");
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("b/z.txt"), "third\n").unwrap();
        std::fs::write(dir.join("a.tsv"), "first\tsecond\n").unwrap();
        std::fs::write(dir.join("notes.md"), "not a document\n").unwrap();
        std::fs::write(dir.join("c.jsonl"), "{\"text\": \"fourth\"}\n").unwrap();
        let c = Corpus::from_path(&dir).unwrap();
        assert_eq!(
            c.texts().collect::<Vec<_>>(),
            ["first", "second", "third", "fourth"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_paths_are_refused_by_name() {
        let dir = scratch("bad");
        let missing = dir.join("nothing-here.txt");
        let e = Corpus::from_path(&missing).unwrap_err().to_string();
        assert!(e.contains("nothing-here.txt"), "{e}");
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let e = Corpus::from_path(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.txt") && e.contains("no document"), "{e}");
        let csv = dir.join("table.csv");
        std::fs::write(&csv, "a,b\n").unwrap();
        let e = Corpus::from_path(&csv).unwrap_err().to_string();
        assert!(e.contains("table.csv") && e.contains(".jsonl"), "{e}");
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let e = Corpus::from_path(&sub).unwrap_err().to_string();
        assert!(e.contains("sub") && e.contains("no .txt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn languages_filter_and_shuffle() {
        let c = Corpus::new(vec![
            doc(Some("fr"), "un"),
            doc(Some("en"), "one"),
            doc(None, "?"),
            doc(Some("fr"), "deux"),
        ]);
        assert_eq!(c.languages(), ["en", "fr"]);
        let fr = c.filter_lang("fr").unwrap();
        assert_eq!(fr.texts().collect::<Vec<_>>(), ["un", "deux"]);
        let e = c.filter_lang("de").unwrap_err().to_string();
        assert!(e.contains("`de`") && e.contains("en, fr"), "{e}");
        let a = c.shuffled(7);
        assert_eq!(a, c.shuffled(7));
        let mut sorted: Vec<&str> = a.texts().collect();
        sorted.sort();
        assert_eq!(sorted, ["?", "deux", "one", "un"]);
        assert_eq!(c.total_bytes(), 2 + 3 + 1 + 4);
    }
}
