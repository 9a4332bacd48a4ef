//! Deserializes the file into `file::FileConfig`, reporting every unknown key,
//! wrong type and missing key in one run rather than only the first.
//!
//! The serde structs in `file` stay the only description of the file's shape.
//! The text is parsed once into a spanned document; then each round
//! deserializes what is left of it, turns serde's first error into a message
//! that names the key's full path, removes the entry at fault and tries again,
//! until the rest deserializes.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue, Deserializer};
use toml::Spanned;

use super::file::FileConfig;

/// One problem with the file's shape, at a byte range of the text.
#[derive(Debug)]
pub(super) struct ShapeError {
    pub span: Range<usize>,
    pub message: String,
}

/// The most rounds one file gets: far more errors than anyone fixes in one go.
const MAX_ROUNDS: usize = 100;

/// Deserializes `text`, or returns every shape error found (a TOML syntax error
/// is one error: nothing after it can be known).
pub(super) fn deserialize(text: &str) -> Result<FileConfig, Vec<ShapeError>> {
    // A file with the right shape (the usual case, and every reload of a big
    // config) is read once, straight; only a wrong one goes through the rounds.
    if let Ok(config) = toml::from_str::<FileConfig>(text) {
        return Ok(config);
    }
    let document = DeTable::parse(text).map_err(|error| {
        vec![ShapeError {
            span: error.span().unwrap_or(0..0),
            message: error.message().to_string(),
        }]
    })?;
    let mut remaining = document.clone();
    let mut errors = Vec::new();
    // Paths of keys removed for a wrong type: their tables then miss them, which
    // is not a second mistake.
    let mut removed_for_type = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let error = match deserialize_document(&remaining) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(_) => return Err(errors),
            Err(error) => error,
        };
        let (problem, target) = diagnose(&remaining, &error);
        let (Some(found), Some(to_remove)) = (
            locate(document.get_ref(), &target),
            locate(remaining.get_ref(), &target).map(|entry| entry.steps),
        ) else {
            errors.push(ShapeError {
                span: target.span,
                message: error.message().to_string(),
            });
            return Err(errors);
        };
        let path = found.path();
        let already_reported = matches!(&problem, Problem::MissingKey { key }
            if removed_for_type.contains(&format!("{path}.{key}")));
        if !already_reported {
            errors.push(ShapeError {
                span: target.span,
                message: problem.describe(&path, found.value.get_ref()),
            });
        }
        if matches!(problem, Problem::WrongType { .. }) {
            removed_for_type.push(path);
        }
        remove(remaining.get_mut(), &to_remove);
    }
    Err(errors)
}

fn deserialize_document(document: &Spanned<DeTable<'_>>) -> Result<FileConfig, toml::de::Error> {
    FileConfig::deserialize(Deserializer::from(document.clone()))
}

/// What serde's `error` in `remaining` means, and which entry it is about.
///
/// Serde reads an array given for a table as the table's fields in order, so an
/// error in an array's element may really be about the array: when the same
/// array emptied is still refused, as a table of the wrong length, the array
/// is the mistake.
fn diagnose(remaining: &Spanned<DeTable<'_>>, error: &toml::de::Error) -> (Problem, Target) {
    let problem = Problem::classify(error.message());
    let target = Target::of(&problem, error.span().unwrap_or(0..0));
    let Some(mut steps) = locate(remaining.get_ref(), &target).map(|entry| entry.steps) else {
        return (problem, target);
    };
    if !matches!(steps.pop(), Some(Step::Index(_))) {
        return (problem, target);
    }
    let mut probe = remaining.clone();
    let Some(array) = entry_mut(probe.get_mut(), &steps) else {
        return (problem, target);
    };
    let array_span = array.span();
    *array.get_mut() = DeValue::Array(DeArray::new());
    if let Err(probe_error) = deserialize_document(&probe) {
        let probe_problem = Problem::classify(probe_error.message());
        if probe_problem.kind_at_fault() == ValueKind::Array
            && probe_error.span() == Some(array_span.clone())
        {
            let array_target = Target::of(&probe_problem, array_span);
            return (probe_problem, array_target);
        }
    }
    (problem, target)
}

/// What serde's message says went wrong.
#[derive(Debug, PartialEq)]
enum Problem {
    UnknownKey {
        key: String,
        /// The keys the table takes.
        expected: Vec<String>,
    },
    WrongType {
        /// What serde wanted, in its own words (`i64`, `a sequence`, ...).
        expected: String,
        /// Serde's word for the value found (`string "lots"`, `map`, ...).
        unexpected: String,
    },
    MissingKey {
        key: String,
    },
    Other(String),
}

impl Problem {
    fn classify(message: &str) -> Problem {
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((key, expected)) = rest.split_once("`, expected ") {
                return Problem::UnknownKey {
                    key: key.to_string(),
                    expected: quoted_names(expected),
                };
            }
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            if let Some(key) = rest.strip_suffix('`') {
                return Problem::MissingKey {
                    key: key.to_string(),
                };
            }
        }
        if let Some((_, expected)) = message
            .strip_prefix("invalid length ")
            .and_then(|rest| rest.split_once(", expected "))
        {
            let expected = expected
                .split_once(" with ")
                .map_or(expected, |(what, _)| what);
            return Problem::WrongType {
                expected: expected.to_string(),
                unexpected: "sequence".to_string(),
            };
        }
        let wrong = message
            .strip_prefix("invalid type: ")
            .or_else(|| message.strip_prefix("invalid value: "));
        if let Some((unexpected, expected)) = wrong.and_then(|rest| rest.rsplit_once(", expected "))
        {
            return Problem::WrongType {
                expected: expected.to_string(),
                unexpected: unexpected.to_string(),
            };
        }
        Problem::Other(message.to_string())
    }

    /// The kind of value whose span serde reported.
    fn kind_at_fault(&self) -> ValueKind {
        match self {
            Problem::MissingKey { .. } => ValueKind::Table,
            Problem::WrongType { unexpected, .. } if unexpected == "map" => ValueKind::Table,
            Problem::WrongType { unexpected, .. } if unexpected == "sequence" => ValueKind::Array,
            _ => ValueKind::Other,
        }
    }

    /// The message for the entry at `path`, whose value in the file is `value`.
    fn describe(&self, path: &str, value: &DeValue<'_>) -> String {
        match self {
            Problem::UnknownKey { key, expected } => match closest(key, expected) {
                Some(near) => format!("{path}: unknown field `{key}`, did you mean `{near}`?"),
                None => format!(
                    "{path}: unknown field `{key}`, expected one of {}",
                    expected
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Problem::WrongType { expected, .. } => format!(
                "{path}: expected {}, found {}",
                plain_expected(expected),
                plain_found(value)
            ),
            Problem::MissingKey { key } => format!("{path}: missing required key `{key}`"),
            Problem::Other(message) => format!("{path}: {message}"),
        }
    }
}

/// The names between backticks in serde's list of expected fields.
fn quoted_names(list: &str) -> Vec<String> {
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The expected key nearest to a misspelt `key`, when it is near enough to be
/// a typo: at most one edit in three letters.
fn closest<'a>(key: &str, expected: &'a [String]) -> Option<&'a str> {
    let allowed = (key.chars().count() / 3).max(1);
    expected
        .iter()
        .map(|name| (strsim::damerau_levenshtein(key, name), name))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name.as_str())
}

/// Serde's word for an expected type, in the words of a TOML file.
fn plain_expected(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize"
        | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        _ if expected.starts_with("struct ") => "a table".to_string(),
        _ => expected.to_string(),
    }
}

/// The value the file has, in plain words.
fn plain_found(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => format!("the string {text:?}"),
        DeValue::Integer(number) => format!("the whole number {number}"),
        DeValue::Float(number) => format!("the number {number}"),
        DeValue::Boolean(flag) => format!("the boolean {flag}"),
        DeValue::Datetime(datetime) => format!("the date-time {datetime}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ValueKind {
    Table,
    Array,
    Other,
}

impl ValueKind {
    fn of(value: &DeValue<'_>) -> ValueKind {
        match value {
            DeValue::Table(_) => ValueKind::Table,
            DeValue::Array(_) => ValueKind::Array,
            _ => ValueKind::Other,
        }
    }
}

/// The entry serde's error points at: by its key's span (an unknown key) or by
/// its value's span, preferring a value of `kind` (an array of tables and its
/// first table share one span).
struct Target {
    span: Range<usize>,
    key: bool,
    kind: ValueKind,
}

impl Target {
    fn of(problem: &Problem, span: Range<usize>) -> Target {
        Target {
            span,
            key: matches!(problem, Problem::UnknownKey { .. }),
            kind: problem.kind_at_fault(),
        }
    }
}

/// One step from a table or array to an entry in it.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// An entry of the document and the steps from the root to it.
struct Located<'d, 'i> {
    steps: Vec<Step>,
    value: &'d Spanned<DeValue<'i>>,
}

impl Located<'_, '_> {
    /// The full path as a user writes it: `upstreams.api.servers[2].weight`.
    fn path(&self) -> String {
        let mut path = String::new();
        for step in &self.steps {
            match step {
                Step::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    if is_bare_key(key) {
                        path.push_str(key);
                    } else {
                        path.push_str(&format!("{key:?}"));
                    }
                }
                Step::Index(index) => path.push_str(&format!("[{index}]")),
            }
        }
        path
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The entry of `root` that `target` names: the deepest match of the preferred
/// kind, else the deepest match.
fn locate<'d, 'i>(root: &'d DeTable<'i>, target: &Target) -> Option<Located<'d, 'i>> {
    let mut matches = Vec::new();
    collect_table(root, &mut Vec::new(), target, &mut matches);
    let preferred = matches
        .iter()
        .rposition(|found| ValueKind::of(found.value.get_ref()) == target.kind);
    match preferred {
        Some(index) => Some(matches.swap_remove(index)),
        None => matches.pop(),
    }
}

fn collect_table<'d, 'i>(
    table: &'d DeTable<'i>,
    steps: &mut Vec<Step>,
    target: &Target,
    matches: &mut Vec<Located<'d, 'i>>,
) {
    for (key, value) in table.iter() {
        steps.push(Step::Key(key.get_ref().to_string()));
        let span = if target.key { key.span() } else { value.span() };
        if span == target.span {
            matches.push(Located {
                steps: steps.clone(),
                value,
            });
        }
        collect_value(value.get_ref(), steps, target, matches);
        steps.pop();
    }
}

fn collect_value<'d, 'i>(
    value: &'d DeValue<'i>,
    steps: &mut Vec<Step>,
    target: &Target,
    matches: &mut Vec<Located<'d, 'i>>,
) {
    match value {
        DeValue::Table(table) => collect_table(table, steps, target, matches),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                steps.push(Step::Index(index));
                if !target.key && element.span() == target.span {
                    matches.push(Located {
                        steps: steps.clone(),
                        value: element,
                    });
                }
                collect_value(element.get_ref(), steps, target, matches);
                steps.pop();
            }
        }
        _ => {}
    }
}

/// The entry at `steps` in `root`.
fn entry_mut<'d, 'i>(
    root: &'d mut DeTable<'i>,
    steps: &[Step],
) -> Option<&'d mut Spanned<DeValue<'i>>> {
    let (Step::Key(first), rest) = steps.split_first()? else {
        return None;
    };
    let mut entry = root.get_mut(first.as_str())?;
    for step in rest {
        entry = match (entry.get_mut(), step) {
            (DeValue::Table(table), Step::Key(key)) => table.get_mut(key.as_str())?,
            (DeValue::Array(array), Step::Index(index)) => array.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(entry)
}

/// Removes the entry at `steps` from `root`.
fn remove(root: &mut DeTable<'_>, steps: &[Step]) {
    let Some((last, parents)) = steps.split_last() else {
        return;
    };
    if parents.is_empty() {
        if let Step::Key(key) = last {
            root.remove(key.as_str());
        }
        return;
    }
    let Some(parent) = entry_mut(root, parents) else {
        return;
    };
    match (parent.get_mut(), last) {
        (DeValue::Table(table), Step::Key(key)) => {
            table.remove(key.as_str());
        }
        (DeValue::Array(array), Step::Index(index)) => {
            *array = std::mem::replace(array, DeArray::new())
                .into_iter()
                .enumerate()
                .filter(|(at, _)| at != index)
                .map(|(_, element)| element)
                .collect();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_are_classified() {
        assert_eq!(
            Problem::classify("unknown field `wieght`, expected `addr` or `weight`"),
            Problem::UnknownKey {
                key: "wieght".into(),
                expected: vec!["addr".into(), "weight".into()],
            }
        );
        assert_eq!(
            Problem::classify("invalid type: string \"lots\", expected i64"),
            Problem::WrongType {
                expected: "i64".into(),
                unexpected: "string \"lots\"".into(),
            }
        );
        assert_eq!(
            Problem::classify("missing field `addr`"),
            Problem::MissingKey { key: "addr".into() }
        );
        assert_eq!(
            Problem::classify("invalid length 0, expected struct ServerSection with 2 elements"),
            Problem::WrongType {
                expected: "struct ServerSection".into(),
                unexpected: "sequence".into(),
            }
        );
        assert_eq!(
            Problem::classify("integer number overflowed"),
            Problem::Other("integer number overflowed".into())
        );
    }

    fn messages(text: &str) -> Vec<String> {
        let mut errors = deserialize(text).expect_err("shape must be refused");
        errors.sort_by_key(|error| error.span.start);
        errors.into_iter().map(|error| error.message).collect()
    }

    #[test]
    fn an_array_given_for_a_table_is_one_error_about_the_array() {
        assert_eq!(
            messages("[[global]]\nidle_timeout = \"1s\"\n"),
            ["global: expected a table, found an array"]
        );
        assert_eq!(
            messages("[admin]\nlisten = []\n[upstreams.u]\nservers = [[]]\n"),
            [
                "admin.listen: expected a string, found an array",
                "upstreams.u.servers[0]: expected a table, found an array",
            ]
        );
    }

    #[test]
    fn a_required_key_of_the_wrong_type_is_not_also_missing() {
        assert_eq!(
            messages("[upstreams.u]\nservers = [{ addr = 5 }]\n[vhosts.v]\nhosts = \"a\"\n"),
            [
                "upstreams.u.servers[0].addr: expected a string, found the whole number 5",
                "vhosts.v.hosts: expected an array, found the string \"a\"",
            ]
        );
    }

    #[test]
    fn near_misses_are_suggested_and_far_ones_are_not() {
        let expected: Vec<String> = ["strategy", "servers", "timeout", "tls"]
            .map(String::from)
            .to_vec();
        assert_eq!(closest("stratgy", &expected), Some("strategy"));
        assert_eq!(closest("severs", &expected), Some("servers"));
        assert_eq!(closest("tsl", &expected), Some("tls"));
        assert_eq!(closest("backends", &expected), None);
        assert_eq!(closest("x", &expected), None);
    }

    #[test]
    fn paths_quote_keys_that_are_not_bare() {
        let value = Spanned::new(0..0, DeValue::Boolean(true));
        let located = Located {
            steps: vec![
                Step::Key("upstreams".into()),
                Step::Key("my app".into()),
                Step::Key("servers".into()),
                Step::Index(2),
                Step::Key("weight".into()),
            ],
            value: &value,
        };
        assert_eq!(located.path(), "upstreams.\"my app\".servers[2].weight");
    }
}
