//! Eureka's XML, read into and written from the JSON shape Eureka itself
//! uses for the same documents: an attribute is an `@name` key, an
//! element's text beside attributes is `$`, a repeated child element is an
//! array, and a leaf element is a string.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

/// Elements nest no deeper than this in a document usherd reads.
const MAX_DEPTH: usize = 32;

/// An element being read.
struct Open {
    name: String,
    attributes: Map<String, Value>,
    children: Map<String, Value>,
    text: String,
}

impl Open {
    fn start(start: &BytesStart<'_>) -> Result<Open, String> {
        let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
        let mut attributes = Map::new();
        for attribute in start.attributes() {
            let attribute =
                attribute.map_err(|error| format!("bad attribute in <{name}>: {error}"))?;
            let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|error| format!("bad attribute value in <{name}>: {error}"))?;
            attributes.insert(format!("@{key}"), Value::String(value.into_owned()));
        }
        Ok(Open {
            name,
            attributes,
            children: Map::new(),
            text: String::new(),
        })
    }

    fn finish(self) -> (String, Value) {
        let text = self.text.trim().to_string();
        let value = if self.children.is_empty() && self.attributes.is_empty() {
            Value::String(text)
        } else {
            let mut object = self.attributes;
            if !text.is_empty() {
                object.insert("$".into(), Value::String(text));
            }
            object.extend(self.children);
            Value::Object(object)
        };
        (self.name, value)
    }

    fn add(&mut self, name: String, value: Value) {
        match self.children.get_mut(&name) {
            None => {
                self.children.insert(name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(first) => {
                let first = first.take();
                self.children.insert(name, Value::Array(vec![first, value]));
            }
        }
    }
}

/// Reads a document: its root element's name and value. No DTD is read.
pub fn parse(text: &str) -> Result<(String, Value), String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|error| format!("the body is not valid XML: {error}"))?;
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("XML nests deeper than {MAX_DEPTH} elements"));
                }
                stack.push(Open::start(&start)?);
            }
            Event::Empty(start) => {
                let (name, value) = Open::start(&start)?.finish();
                match stack.last_mut() {
                    Some(parent) => parent.add(name, value),
                    None => return Ok((name, value)),
                }
            }
            Event::End(_) => {
                let Some(open) = stack.pop() else {
                    return Err(
                        "the body is not valid XML: a closing tag without its opening".into(),
                    );
                };
                let (name, value) = open.finish();
                match stack.last_mut() {
                    Some(parent) => parent.add(name, value),
                    None => return Ok((name, value)),
                }
            }
            Event::Text(text) => {
                if let Some(open) = stack.last_mut() {
                    let text = text
                        .decode()
                        .map_err(|error| format!("the body is not valid XML: {error}"))?;
                    open.text.push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(character)) => character.to_string(),
                    _ => {
                        let name = reference
                            .decode()
                            .map_err(|error| format!("the body is not valid XML: {error}"))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                format!("the body names an unknown XML entity `&{name};`")
                            })?
                            .to_string()
                    }
                };
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err("XML with a DOCTYPE is refused".into()),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                return Err(
                    "the body is not valid XML: it ends before its root element closes".into(),
                )
            }
        }
    }
}

/// Writes `value` as the element `root`, with an XML declaration.
pub fn render(root: &str, value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    element(&mut out, root, value);
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                element(out, name, item);
            }
        }
        Value::Object(object) => {
            out.push('<');
            out.push_str(name);
            for (key, value) in object {
                if let Some(attribute) = key.strip_prefix('@') {
                    out.push(' ');
                    out.push_str(attribute);
                    out.push_str("=\"");
                    out.push_str(&quick_xml::escape::escape(scalar(value)));
                    out.push('"');
                }
            }
            out.push('>');
            if let Some(text) = object.get("$") {
                out.push_str(&quick_xml::escape::escape(scalar(text)));
            }
            for (key, value) in object {
                if !key.starts_with('@') && key != "$" {
                    element(out, key, value);
                }
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        scalar_value => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&quick_xml::escape::escape(scalar(scalar_value)));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eurekas_xml_reads_as_its_json() {
        let xml = r#"<?xml version="1.0"?>
            <instance>
              <instanceId>host:api:8080</instanceId>
              <app>API</app>
              <port enabled="true">8080</port>
              <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
              <metadata><zone>a &amp; b</zone><empty/></metadata>
            </instance>"#;
        let (root, value) = parse(xml).unwrap();
        assert_eq!(root, "instance");
        assert_eq!(
            value,
            json!({
                "instanceId": "host:api:8080",
                "app": "API",
                "port": {"@enabled": "true", "$": "8080"},
                "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
                "metadata": {"zone": "a & b", "empty": ""}
            })
        );
    }

    #[test]
    fn repeated_elements_are_an_array_and_round_trip() {
        let value = json!({"application": [
            {"name": "A", "instance": [{"instanceId": "1"}, {"instanceId": "2"}]},
            {"name": "B", "instance": {"instanceId": "3", "port": {"@enabled": "true", "$": 80}}}
        ]});
        let xml = render("applications", &value);
        let (root, back) = parse(&xml).unwrap();
        assert_eq!(root, "applications");
        assert_eq!(back["application"][0]["instance"][1]["instanceId"], "2");
        assert_eq!(back["application"][1]["instance"]["port"]["$"], "80");
        assert_eq!(
            back["application"][1]["instance"]["port"]["@enabled"],
            "true"
        );
    }

    #[test]
    fn broken_and_hostile_documents_are_refused() {
        assert!(parse("<instance><app>A</instance>").is_err());
        assert!(parse("<instance>").is_err());
        assert!(parse(r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#).is_err());
        assert!(parse("<x>&unknown;</x>").is_err());
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(parse(&deep).is_err());
    }
}
