//! A small reader of the pages `bank check --html` and `bank bench --html` write: the start
//! tags of a document with their attributes, enough to find elements by class and attribute
//! without a browser. Attribute values are unescaped only for the entities the pages use.

use std::collections::BTreeMap;

/// A start tag: its name and attributes.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

impl Tag {
    /// Whether its `class` attribute lists `class`.
    pub fn has_class(&self, class: &str) -> bool {
        self.attributes
            .get("class")
            .is_some_and(|classes| classes.split_whitespace().any(|c| c == class))
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

/// Every start tag of `html`, in order (comments, doctype and end tags skipped). Panics on a
/// tag that is not closed: the pages are the test's subject.
pub fn start_tags(html: &str) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let close = rest.find('>').expect("every tag is closed");
        let inside = &rest[..close];
        rest = &rest[close + 1..];
        if inside.starts_with('/') || inside.starts_with('!') {
            continue;
        }
        tags.push(parse_tag(inside.trim_end_matches('/')));
    }
    tags
}

fn parse_tag(inside: &str) -> Tag {
    let name_end = inside
        .find(|c: char| c.is_whitespace())
        .unwrap_or(inside.len());
    let mut attributes = BTreeMap::new();
    let mut rest = inside[name_end..].trim_start();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        rest = &rest[name_end..];
        let value = if let Some(quoted) = rest.strip_prefix("=\"") {
            let end = quoted.find('"').expect("attribute values are closed");
            rest = &quoted[end + 1..];
            unescape(&quoted[..end])
        } else {
            String::new()
        };
        attributes.insert(name, value);
        rest = rest.trim_start();
    }
    Tag {
        name: inside[..name_end].to_string(),
        attributes,
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The part of `html` from the start tag with class `class` to the end of its `</svg>`.
pub fn svg_with_class<'a>(html: &'a str, class: &str) -> Option<&'a str> {
    let marker = format!("class=\"chart {class}\"");
    let start = html.find(&marker)?;
    let start = html[..start].rfind("<svg")?;
    let end = html[start..].find("</svg>")? + start;
    Some(&html[start..end + "</svg>".len()])
}
