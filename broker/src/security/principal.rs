//! Who a connection is: its principal (`User:<name>`), from a client certificate through
//! mapping rules, from SASL, or `User:ANONYMOUS`.
//!
//! Mapping rules follow Kafka's `ssl.principal.mapping.rules`: a list of `RULE:pattern/
//! replacement/[L|U]` and `DEFAULT`, tried in order; the first that applies gives the name.
//! A rule's pattern must match a whole input; its replacement may use `$1`, `${name}`; `L` or
//! `U` lower- or upper-cases the result. The inputs, in order, are the certificate's subject
//! as `CN=<common name>` (only the common name is read from the subject) and each DNS name of
//! its subject alternative names as `DNS:<name>`; a rule applies to the first input it matches.
//! `DEFAULT` gives the common name. No rule applying: the certificate gives no principal and
//! the connection is refused as unauthenticated when anonymous access is off.

use regex::Regex;

/// The principal of a connection that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

#[derive(Clone, Debug)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Parsed mapping rules.
#[derive(Clone, Debug)]
pub struct MappingRules(Vec<Rule>);

impl Default for MappingRules {
    fn default() -> Self {
        MappingRules(vec![Rule::Default])
    }
}

/// Reads up to the next `/` not escaped by a backslash; returns (text, rest after the slash).
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl MappingRules {
    /// Parses `DEFAULT`, `RULE:^CN=(.*)$/$1/L, DEFAULT`, ... (commas or spaces between rules).
    pub fn parse(text: &str) -> Result<MappingRules, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule '{rest}' has no '/' after its pattern"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule '{rest}' has no '/' after its replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern '{pattern}': {e}"))?;
                rules.push(Rule::Replace {
                    pattern,
                    replacement,
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "'{rest}' is not a rule: expected DEFAULT or RULE:pattern/replacement/[LU]"
                ));
            }
            let trimmed = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if trimmed.len() == rest.len() && !rest.is_empty() {
                return Err(format!("rules must be separated by commas, at '{rest}'"));
            }
            rest = trimmed;
        }
        if rules.is_empty() {
            return Err("no mapping rule given (DEFAULT gives the common name)".into());
        }
        Ok(MappingRules(rules))
    }

    /// The principal a certificate with common name `cn` and DNS names `dns` maps to.
    pub fn principal(&self, cn: Option<&str>, dns: &[String]) -> Option<String> {
        let inputs: Vec<String> = cn
            .map(|c| format!("CN={c}"))
            .into_iter()
            .chain(dns.iter().map(|d| format!("DNS:{d}")))
            .collect();
        for rule in &self.0 {
            match rule {
                Rule::Default => {
                    if let Some(cn) = cn.filter(|c| !c.is_empty()) {
                        return Some(format!("User:{cn}"));
                    }
                }
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    let Some(input) = inputs.iter().find(|i| pattern.is_match(i)) else {
                        continue;
                    };
                    let name = pattern.replace(input, replacement.as_str()).into_owned();
                    let name = match case {
                        Some('L') => name.to_lowercase(),
                        Some('U') => name.to_uppercase(),
                        _ => name,
                    };
                    if !name.is_empty() {
                        return Some(format!("User:{name}"));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_map_the_subject_or_a_san_to_a_user() {
        let dns = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (rules, common name, DNS names, principal)
        type Case<'a> = (&'a str, Option<&'a str>, Vec<String>, Option<&'a str>);
        let cases: &[Case] = &[
            ("DEFAULT", Some("alice"), dns(&[]), Some("User:alice")),
            ("DEFAULT", None, dns(&["a.example"]), None),
            (
                "RULE:^CN=(.*)-svc$/$1/U, DEFAULT",
                Some("billing-svc"),
                dns(&[]),
                Some("User:BILLING"),
            ),
            (
                "RULE:^CN=(.*)-svc$/$1/, DEFAULT",
                Some("bob"),
                dns(&[]),
                Some("User:bob"),
            ),
            (
                r"RULE:^DNS:([a-z]+)\.clients\.example$/$1/L",
                Some("ignored"),
                dns(&["x.other", "Carol.clients.example"]),
                None,
            ),
            (
                r"RULE:^DNS:([A-Za-z]+)\.clients\.example$/$1/L",
                Some("ignored"),
                dns(&["x.other", "Carol.clients.example"]),
                Some("User:carol"),
            ),
            // A slash in a pattern is escaped.
            (
                r"RULE:^CN=a\/(.*)$/$1/",
                Some("a/b"),
                dns(&[]),
                Some("User:b"),
            ),
            // The pattern must match the whole input.
            ("RULE:alice/x/", Some("alice"), dns(&[]), None),
        ];
        for (rules, cn, names, want) in cases {
            let r = MappingRules::parse(rules).unwrap();
            assert_eq!(
                r.principal(*cn, names).as_deref(),
                *want,
                "{rules} {cn:?} {names:?}"
            );
        }
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in [
            "",
            "RULE:abc",
            "RULE:a/b",
            "DEFAULTX",
            "RULE:(/x/",
            "nonsense",
        ] {
            assert!(MappingRules::parse(bad).is_err(), "{bad}");
        }
    }
}
