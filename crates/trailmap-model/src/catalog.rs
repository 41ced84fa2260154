//! The touchpoint catalog: raw event names and page paths in, named touchpoints out.
//!
//! Rules are tried in order and the first match wins, as in a routing table, so specific
//! rules (`^/product/\d+/reviews$`) go before general ones (`^/product/`).

use crate::config::{CatalogConfig, TouchpointRule, Unmatched};
use crate::error::{Error, Result};
use regex::Regex;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// What a raw value was classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub touchpoint: Arc<str>,
    pub stage: Option<Arc<str>>,
    pub channel: Option<Arc<str>>,
}

struct Rule {
    /// Source names or kinds the rule applies to; empty means every source.
    sources: Vec<String>,
    pattern: Regex,
    touchpoint: String,
    /// Whether `touchpoint` refers to capture groups (`$1`, `${name}`).
    templated: bool,
    stage: Option<Arc<str>>,
    channel: Option<Arc<str>>,
}

/// A compiled catalog. Cheap to share; use a [`CatalogCache`] per reader in hot loops.
pub struct Catalog {
    rules: Vec<Rule>,
    unmatched: Unmatched,
    stages: Vec<String>,
    /// Stage of each touchpoint that a rule names with a stage, for touchpoints seen raw.
    stage_of: FxHashMap<String, Arc<str>>,
}

impl Catalog {
    pub fn compile(config: &CatalogConfig) -> Result<Catalog> {
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut stage_of = FxHashMap::default();
        for (i, rule) in config.rules.iter().enumerate() {
            rules.push(compile_rule(i, rule, &config.stages)?);
            if let (Some(stage), false) = (&rule.stage, rule.touchpoint.contains('$')) {
                stage_of
                    .entry(rule.touchpoint.clone())
                    .or_insert_with(|| Arc::from(stage.as_str()));
            }
        }
        Ok(Catalog {
            rules,
            unmatched: config.unmatched,
            stages: config.stages.clone(),
            stage_of,
        })
    }

    /// A catalog with no rules: raw values are kept as touchpoints.
    pub fn passthrough() -> Catalog {
        Catalog {
            rules: Vec::new(),
            unmatched: Unmatched::Keep,
            stages: Vec::new(),
            stage_of: FxHashMap::default(),
        }
    }

    /// The lifecycle stages in map order (the columns of the journey map).
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// Classifies a raw value from a source; `None` means the catalog drops it.
    pub fn classify(&self, source_name: &str, source_kind: &str, raw: &str) -> Option<Classified> {
        for rule in &self.rules {
            if !rule.sources.is_empty()
                && !rule
                    .sources
                    .iter()
                    .any(|s| s == source_name || s == source_kind)
            {
                continue;
            }
            if rule.templated {
                if let Some(caps) = rule.pattern.captures(raw) {
                    let mut name = String::new();
                    caps.expand(&rule.touchpoint, &mut name);
                    return Some(Classified {
                        touchpoint: Arc::from(name),
                        stage: rule.stage.clone(),
                        channel: rule.channel.clone(),
                    });
                }
            } else if rule.pattern.is_match(raw) {
                return Some(Classified {
                    touchpoint: Arc::from(rule.touchpoint.as_str()),
                    stage: rule.stage.clone(),
                    channel: rule.channel.clone(),
                });
            }
        }
        match self.unmatched {
            Unmatched::Drop => None,
            Unmatched::Keep => Some(Classified {
                touchpoint: Arc::from(raw),
                stage: self.stage_of.get(raw).cloned(),
                channel: None,
            }),
        }
    }
}

fn compile_rule(i: usize, rule: &TouchpointRule, stages: &[String]) -> Result<Rule> {
    let key = |field: &str| format!("catalog.rules[{i}].{field}");
    let pattern = Regex::new(&rule.pattern)
        .map_err(|e| Error::config(key("match"), format!("not a valid regex: {e}")))?;
    if rule.touchpoint.trim().is_empty() {
        return Err(Error::config(key("touchpoint"), "must not be empty"));
    }
    if let Some(stage) = &rule.stage
        && !stages.is_empty()
        && !stages.contains(stage)
    {
        return Err(Error::config(
            key("stage"),
            format!(
                "`{stage}` is not one of catalog.stages ({}); add it there or fix the name",
                stages.join(", ")
            ),
        ));
    }
    Ok(Rule {
        sources: rule
            .source
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_default(),
        templated: rule.touchpoint.contains('$'),
        pattern,
        touchpoint: rule.touchpoint.clone(),
        stage: rule.stage.as_deref().map(Arc::from),
        channel: rule.channel.as_deref().map(Arc::from),
    })
}

/// Memoises classification per raw value for one source. Raw values repeat heavily (a few
/// hundred event names, page paths with ids), so the regexes run once per distinct value,
/// not per event. The memo is bounded: past `capacity` distinct values it starts over.
pub struct CatalogCache {
    catalog: Arc<Catalog>,
    source_name: String,
    source_kind: String,
    memo: FxHashMap<Box<str>, Option<Classified>>,
    capacity: usize,
}

impl CatalogCache {
    pub fn new(catalog: Arc<Catalog>, source_name: &str, source_kind: &str) -> Self {
        CatalogCache {
            catalog,
            source_name: source_name.to_string(),
            source_kind: source_kind.to_string(),
            memo: FxHashMap::default(),
            capacity: 1 << 16,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn classify(&mut self, raw: &str) -> Option<&Classified> {
        if !self.memo.contains_key(raw) {
            let result = self
                .catalog
                .classify(&self.source_name, &self.source_kind, raw);
            if self.memo.len() >= self.capacity {
                self.memo.clear();
            }
            self.memo.insert(Box::from(raw), result);
        }
        self.memo.get(raw).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn catalog(toml: &str) -> Catalog {
        let config = Config::from_toml_str(toml).unwrap();
        Catalog::compile(&config.catalog).unwrap()
    }

    #[test]
    fn first_matching_rule_wins_and_captures_expand() {
        let c = catalog(
            r#"
            [catalog]
            stages = ["consideration", "support"]
            [[catalog.rules]]
            match = '^/product/\d+/reviews$'
            touchpoint = "reviews_view"
            stage = "consideration"
            [[catalog.rules]]
            match = '^/product/\d+'
            touchpoint = "product_view"
            stage = "consideration"
            channel = "web"
            [[catalog.rules]]
            source = "ticket"
            match = '^(new|open)$'
            touchpoint = "ticket_${1}"
            stage = "support"
            "#,
        );
        let tp = |src: &str, raw: &str| c.classify(src, src, raw).map(|x| x.touchpoint.to_string());
        assert_eq!(
            tp("web", "/product/12/reviews").as_deref(),
            Some("reviews_view")
        );
        assert_eq!(tp("web", "/product/12").as_deref(), Some("product_view"));
        assert_eq!(tp("ticket", "new").as_deref(), Some("ticket_new"));
        // The ticket rule is scoped to the ticket source: elsewhere the raw value is kept.
        assert_eq!(tp("web", "new").as_deref(), Some("new"));
        let hit = c.classify("web", "clickstream", "/product/7").unwrap();
        assert_eq!(hit.stage.as_deref(), Some("consideration"));
        assert_eq!(hit.channel.as_deref(), Some("web"));
    }

    #[test]
    fn unmatched_values_can_be_dropped() {
        let c = catalog(
            r#"
            [catalog]
            unmatched = "drop"
            [[catalog.rules]]
            match = '^buy$'
            touchpoint = "purchase"
            "#,
        );
        assert!(c.classify("s", "s", "buy").is_some());
        assert!(c.classify("s", "s", "browse").is_none());
    }

    #[test]
    fn a_bad_regex_names_the_rule() {
        let config =
            Config::from_toml_str("[[catalog.rules]]\nmatch = '(unclosed'\ntouchpoint = 'x'\n")
                .unwrap_err();
        assert!(
            config.to_string().contains("catalog.rules[0].match"),
            "{config}"
        );
    }
}
