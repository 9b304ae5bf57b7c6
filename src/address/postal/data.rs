//! The per-country address metadata, embedded in the binary and parsed once.
//!
//! The file is Google's address metadata (libaddressinput, CC-BY 4.0). Each entry gives a
//! country's envelope layout (`fmt`, and `lfmt` for the Latin-script layout of countries
//! that write big-to-small in their own script), the fields it requires (`require`), the
//! fields printed in capitals (`upper`), its postal code pattern (`zip`, `zipex`) and its
//! subdivisions (`sub_keys`, `sub_names`, `sub_lnames`, `sub_isoids`, `sub_zips`, all
//! `~`-separated and aligned by position). Missing keys fall back to the `ZZ` entry, as in
//! libaddressinput.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// The raw file. The path is relative to this source file, so the module builds the same
/// inside the main crate and in any crate that includes it by path.
const RAW_METADATA: &str = include_str!("../../../data/address-formats.json");

/// One entry of the file as written; every key is optional there.
#[derive(Debug, Default, Deserialize)]
struct RawEntry {
    fmt: Option<String>,
    lfmt: Option<String>,
    require: Option<String>,
    upper: Option<String>,
    zip: Option<String>,
    zipex: Option<String>,
    name: Option<String>,
    sub_keys: Option<String>,
    sub_names: Option<String>,
    sub_lnames: Option<String>,
    sub_isoids: Option<String>,
    sub_zips: Option<String>,
}

/// A country's addressing rules, with the `ZZ` defaults already applied.
#[derive(Debug)]
pub(super) struct Country {
    /// ISO 3166-1 alpha-2 code.
    pub code: String,
    /// English name in capitals, as the metadata spells it ("UNITED KINGDOM").
    pub name: String,
    /// Envelope layout in the country's own order.
    pub fmt: String,
    /// Envelope layout for addresses written in Latin script, when it differs.
    pub lfmt: Option<String>,
    /// Letters of the required fields (A street, C city, S state, Z postal code, N name,
    /// O organisation).
    pub require: String,
    /// Letters of the fields printed in capitals.
    pub upper: String,
    /// The postal code pattern, anchored and case-insensitive.
    pub zip: Option<Regex>,
    /// Example postal codes, in the canonical written form.
    pub zip_examples: Vec<String>,
    /// States, provinces, prefectures... in the metadata's order.
    pub subdivisions: Vec<Subdivision>,
}

/// One subdivision (state, province, prefecture...) of a country.
#[derive(Debug)]
pub(super) struct Subdivision {
    /// The value the metadata stores for the field ("CA", "NSW", "東京都", "Co. Dublin").
    pub key: String,
    /// The local name when it differs from the key ("California").
    pub name: Option<String>,
    /// The Latin-script name for non-Latin keys ("Tokyo").
    pub lname: Option<String>,
    /// The ISO 3166-2 subdivision code, without the country prefix.
    pub isoid: Option<String>,
    /// The postal code prefix pattern of this subdivision, anchored at the start.
    pub zip_prefix: Option<Regex>,
}

impl Country {
    /// Whether the layout (`fmt`) prints the given field letter.
    pub fn uses_field(&self, letter: char) -> bool {
        self.fmt.contains(&format!("%{letter}"))
    }

    /// Whether the country requires the given field letter.
    pub fn requires(&self, letter: char) -> bool {
        self.require.contains(letter)
    }

    /// Whether the country prints the given field letter in capitals.
    pub fn upper(&self, letter: char) -> bool {
        self.upper.contains(letter)
    }
}

/// Every country of the metadata, by ISO alpha-2 code (the `ZZ` defaults and the
/// language variants such as `CA--fr` are left out).
pub(super) static COUNTRIES: LazyLock<HashMap<String, Country>> = LazyLock::new(load_countries);

/// The country with this exact (upper-case) alpha-2 code.
pub(super) fn country(code: &str) -> Option<&'static Country> {
    COUNTRIES.get(code)
}

/// The file is part of the binary and a unit test proves it parses, so a failure here is a
/// build defect; it degrades to "no country known" instead of taking the server down.
fn load_countries() -> HashMap<String, Country> {
    let raw: HashMap<String, RawEntry> = serde_json::from_str(RAW_METADATA).unwrap_or_default();
    let defaults = raw.get("ZZ");
    let default_of = |pick: fn(&RawEntry) -> Option<&String>| {
        defaults.and_then(pick).cloned().unwrap_or_default()
    };
    let default_fmt = default_of(|e| e.fmt.as_ref());
    let default_require = default_of(|e| e.require.as_ref());
    let default_upper = default_of(|e| e.upper.as_ref());

    raw.iter()
        .filter(|(code, _)| code.len() == 2 && code.as_str() != "ZZ")
        .map(|(code, entry)| {
            let country = Country {
                code: code.clone(),
                name: entry.name.clone().unwrap_or_else(|| code.clone()),
                fmt: entry.fmt.clone().unwrap_or_else(|| default_fmt.clone()),
                lfmt: entry.lfmt.clone(),
                require: entry
                    .require
                    .clone()
                    .unwrap_or_else(|| default_require.clone()),
                upper: entry.upper.clone().unwrap_or_else(|| default_upper.clone()),
                zip: entry.zip.as_deref().and_then(|p| anchored(p, true)),
                zip_examples: split_list(entry.zipex.as_deref(), ','),
                subdivisions: subdivisions(entry),
            };
            (code.clone(), country)
        })
        .collect()
}

/// Builds the subdivision list from the aligned `~`-separated lists.
fn subdivisions(entry: &RawEntry) -> Vec<Subdivision> {
    let keys = split_list(entry.sub_keys.as_deref(), '~');
    let names = split_list(entry.sub_names.as_deref(), '~');
    let lnames = split_list(entry.sub_lnames.as_deref(), '~');
    let isoids = split_list(entry.sub_isoids.as_deref(), '~');
    let zips = split_list(entry.sub_zips.as_deref(), '~');
    let at = |list: &[String], i: usize| list.get(i).filter(|s| !s.is_empty()).cloned();

    keys.iter()
        .enumerate()
        .map(|(i, key)| Subdivision {
            key: key.clone(),
            name: at(&names, i),
            lname: at(&lnames, i),
            isoid: at(&isoids, i),
            zip_prefix: at(&zips, i).and_then(|p| anchored(&p, false)),
        })
        .collect()
}

/// Splits a metadata list; an absent list is empty.
fn split_list(list: Option<&str>, separator: char) -> Vec<String> {
    list.map(|l| l.split(separator).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Compiles a metadata pattern anchored at the start (and at the end when `whole`), case
/// insensitive. The alternatives in the file (`20[02-5]|569`) are grouped first so that the
/// anchors apply to all of them.
fn anchored(pattern: &str, whole: bool) -> Option<Regex> {
    let source = if whole {
        format!("^(?:{pattern})$")
    } else {
        format!("^(?:{pattern})")
    };
    RegexBuilder::new(&source)
        .case_insensitive(true)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_with_every_pattern() {
        assert!(COUNTRIES.len() > 240, "only {} countries", COUNTRIES.len());
        let us = country("US").expect("US is in the metadata");
        assert_eq!(us.require, "ACSZ");
        assert!(us.subdivisions.iter().all(|s| s.zip_prefix.is_some()));
        // DE has no `upper`: it inherits ZZ's "C".
        assert_eq!(country("DE").map(|c| c.upper.as_str()), Some("C"));
        // CH says `upper: ""` explicitly: nothing in capitals.
        assert_eq!(country("CH").map(|c| c.upper.as_str()), Some(""));
        let raw: HashMap<String, RawEntry> =
            serde_json::from_str(RAW_METADATA).expect("metadata is valid JSON");
        for (code, entry) in &raw {
            if let Some(zip) = &entry.zip {
                assert!(anchored(zip, true).is_some(), "{code} zip pattern");
            }
        }
    }

    #[test]
    fn dc_prefix_alternatives_are_all_anchored() {
        let us = country("US").expect("US");
        let dc = us.subdivisions.iter().find(|s| s.key == "DC").expect("DC");
        let prefix = dc.zip_prefix.as_ref().expect("DC prefix");
        assert!(prefix.is_match("20001"));
        assert!(prefix.is_match("56901"));
        assert!(!prefix.is_match("10569"));
    }
}
