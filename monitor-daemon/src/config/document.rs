//! The TOML document of a configuration: parsed, checked for keys the configuration does not
//! have (rejected in file order, listing the keys allowed there), and deserialized, with the
//! parser's and the deserializer's errors put on one line that names the line and column or the
//! key.

use serde::Deserialize as _;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{Config, ConfigError, TargetSelector};

/// [`parse`](super::parse) without [`Config::validate`].
pub(super) fn parse_unvalidated(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let document = DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: describe_syntax_error(text, &error),
    })?;
    check_keys(document.get_ref(), origin)?;
    Config::deserialize(toml::de::Deserializer::from(document.clone()))
        .map_err(|error| describe_value_error(document.get_ref(), origin, &error))
}

/// The allowed keys: each table with its keys, in file order.
fn schema() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut tables: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for setting in Config::default().settings() {
        match tables
            .iter_mut()
            .find(|(section, _)| *section == setting.section)
        {
            Some((_, names)) => names.push(setting.name),
            None => tables.push((setting.section, vec![setting.name])),
        }
    }
    tables
}

/// The entries of `table` in the order they appear in the file.
fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a str, &'a Spanned<DeValue<'i>>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
        .into_iter()
        .map(|(key, value)| (key.get_ref().as_ref(), value))
        .collect()
}

/// Rejects the first key (in file order) that the configuration does not have. Values of the
/// wrong type are left to deserialization.
fn check_keys(document: &DeTable<'_>, origin: &str) -> Result<(), ConfigError> {
    let unknown = |key: String, allowed: Vec<&'static str>| ConfigError::UnknownKey {
        origin: origin.to_owned(),
        key,
        allowed,
    };
    let tables = schema();
    for (section, value) in in_file_order(document) {
        let Some((_, names)) = tables.iter().find(|(name, _)| *name == section) else {
            return Err(unknown(
                section.to_owned(),
                tables.iter().map(|(name, _)| *name).collect(),
            ));
        };
        let DeValue::Table(table) = value.get_ref() else {
            continue;
        };
        for (name, value) in in_file_order(table) {
            if !names.contains(&name) {
                return Err(unknown(format!("{section}.{name}"), names.clone()));
            }
            if (section, name) != ("trace", "targets") {
                continue;
            }
            let DeValue::Array(targets) = value.get_ref() else {
                continue;
            };
            for (index, target) in targets.iter().enumerate() {
                let DeValue::Table(target) = target.get_ref() else {
                    continue;
                };
                if let Some((field, _)) = in_file_order(target)
                    .into_iter()
                    .find(|(field, _)| !TargetSelector::FIELDS.contains(field))
                {
                    return Err(unknown(
                        format!("trace.targets[{index}].{field}"),
                        TargetSelector::FIELDS.to_vec(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A parser message on one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join("; ")
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A TOML syntax error on one line, with its line and column.
fn describe_syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(error.message());
    match error.span() {
        Some(span) => {
            let (line, column) = position(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// A deserialization error (wrong type, integer out of range, unparsable address) attributed
/// to the key whose value it is about.
fn describe_value_error(
    document: &DeTable<'_>,
    origin: &str,
    error: &toml::de::Error,
) -> ConfigError {
    let key = error
        .span()
        .and_then(|span| locate_in(document, "", span.start));
    match key {
        Some(key) => ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            reason: plain_reason(error.message()),
        },
        // Without a position the error's own text names the key.
        None => ConfigError::Syntax {
            origin: origin.to_owned(),
            message: one_line(&error.to_string()),
        },
    }
}

/// The dotted key of the innermost entry of `table` (under `path`) whose value spans `offset`.
fn locate_in(table: &DeTable<'_>, path: &str, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let key = key.get_ref();
        let path = if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        };
        locate(value, &path, offset)
    })
}

/// [`locate_in`] for a value at `path`: its innermost part spanning `offset`.
fn locate(value: &Spanned<DeValue<'_>>, path: &str, offset: usize) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => locate_in(table, path, offset),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| locate(item, &format!("{path}[{index}]"), offset)),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(|| path.to_owned()))
}

/// Serde's wording with Rust type names replaced by what a configuration file calls them.
fn plain_reason(message: &str) -> String {
    let message = one_line(message);
    if let Some(at) = message.find("expected struct ") {
        return format!("{}expected a table", &message[..at]);
    }
    const PLAIN: [(&str, &str); 5] = [
        ("expected f64", "expected a number"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
    ];
    PLAIN.iter().fold(message, |message, (rust, plain)| {
        message.replace(rust, plain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{ORIGIN, invalid, parse_error, unknown};

    #[test]
    fn unknown_top_level_key_lists_the_tables() {
        let (key, allowed) = unknown("[watch]\ninterval_seconds = 3\n[wacth]\n");
        assert_eq!(key, "wacth");
        assert_eq!(allowed, ["daemon", "watch", "trace", "reports", "metrics"]);
        assert_eq!(unknown("verbose = true").0, "verbose");
    }

    #[test]
    fn unknown_nested_key_is_dotted() {
        let (key, allowed) = unknown("[watch]\nintervall = 3\n");
        assert_eq!(key, "watch.intervall");
        assert!(allowed.contains(&"interval_seconds"));
        assert_eq!(unknown("watch.intervall = 3").0, "watch.intervall");
        assert_eq!(
            unknown("[trace]\nauto = true\nmax = 1\nmin = 2").0,
            "trace.max"
        );
        let (key, allowed) =
            unknown("[[trace.targets]]\nunit = \"a\"\n[[trace.targets]]\nname = \"x\"");
        assert_eq!(key, "trace.targets[1].name");
        assert_eq!(allowed, TargetSelector::FIELDS);
    }

    #[test]
    fn wrong_types_name_the_key() {
        let (key, reason) = invalid("[watch]\ninterval_seconds = \"fast\"\n");
        assert_eq!(key, "watch.interval_seconds");
        assert!(
            reason.contains("\"fast\"") && reason.contains("expected a number"),
            "{reason}"
        );
        let (key, reason) = invalid("[watch]\npersistence = -1\n");
        assert_eq!(key, "watch.persistence");
        assert!(
            reason.contains("-1") && reason.contains("from 0 to 4294967295"),
            "{reason}"
        );
        assert_eq!(
            invalid("[daemon]\nlisten = \"localhost\"").0,
            "daemon.listen"
        );
        assert_eq!(invalid("[trace]\nauto = 1").0, "trace.auto");
        assert_eq!(
            invalid("[[trace.targets]]\nunit = 5").0,
            "trace.targets[0].unit"
        );
        let (key, reason) = invalid("[trace]\ntargets = 5");
        assert_eq!(key, "trace.targets");
        assert!(reason.contains("expected an array"), "{reason}");
        assert_eq!(invalid("[trace]\ntargets = [1]").0, "trace.targets[0]");
        let (key, reason) = invalid("watch = 5");
        assert_eq!(key, "watch");
        assert!(reason.contains("expected a table"), "{reason}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let error = parse_error("[watch]\ninterval_seconds = 2\nwindow_seconds 300\n");
        let ConfigError::Syntax { origin, message } = &error else {
            panic!("expected Syntax, got {error:?}");
        };
        assert_eq!(origin, ORIGIN);
        assert!(message.starts_with("line 3, column "), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let error = parse_error("[watch]\ninterval_seconds = 2\ninterval_seconds = 3\n");
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
        assert!(error.to_string().contains("line 3"), "{error}");
    }

    #[test]
    fn position_counts_lines_and_characters() {
        assert_eq!(position("", 0), (1, 1));
        assert_eq!(position("ab\ncd", 4), (2, 2));
        assert_eq!(position("é\nxé y", 7), (2, 4));
        assert_eq!(position("ab", 99), (1, 3));
    }
}
