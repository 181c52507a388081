//! Objects sent in Kubernetes' protobuf encoding, read into the JSON Kubernetes would
//! give for them. `kubectl create namespace|service|job|…` (client-go's typed clients)
//! post their object as `k8s\0` + `runtime.Unknown{typeMeta, raw}`, `raw` being the
//! object's message. kubelab keeps objects as JSON, so this module owns one thing: the
//! walk from those bytes to a `serde_json::Value`, driven by a table (`schema.rs`) of the
//! fields kubelab reads, numbered as in Kubernetes' `generated.proto` files.
//!
//! Hand-written because no crate fits: k8s-pb has prost structs for every type but no
//! mapping to the JSON (k8s-openapi) shape, and prost drops unknown fields silently.
//!
//! Go's marshaller writes a value (non-pointer) field always, zero or not, and a pointer
//! field only when set. So a field is either `omit_zero` (a value field: zero means
//! unset and is left out, as `omitempty` does) or `keep` (a pointer, or a field JSON
//! always has: what is written is kept, `replicas: 0` included). A field the table
//! lacks fails the read unless its value is zero: never dropped silently.

use prost::encoding::{decode_key, decode_varint, WireType};
use serde_json::{Map, Value};

mod schema;
#[cfg(test)]
mod tests;

use super::protobuf::MAGIC;

/// Go's zero `time.Time` in Unix seconds. `metav1.Time` writes an empty message for it
/// (what kubectl sends); a plain timestamp of it would carry these seconds.
const ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// How deep an unknown field's bytes are looked into to tell they are all zero.
const ZERO_DEPTH: u32 = 8;

/// What a field holds: how its bytes read and how it shows in JSON.
#[derive(Clone, Copy)]
enum Shape {
    Str,
    /// Any varint integer (int32 or int64; negatives come sign-extended).
    Int,
    Bool,
    Msg(&'static Message),
    /// `metav1.Time` `{seconds = 1}`: an RFC 3339 string; the zero time is left out.
    Time,
    /// `resource.Quantity` `{string = 1}`: the string.
    Quantity,
    /// `intstr.IntOrString` `{type = 1, intVal = 2, strVal = 3}`: a number or a string.
    IntOrString,
    /// A repeated field: a JSON array of the shape.
    List(&'static Shape),
    /// A `map<string, _>`: entries `{key = 1, value = 2}`, a JSON object.
    Map(&'static Shape),
}

/// Whether a zero value is dropped (a Go value field) or kept (pointer or required).
#[derive(Clone, Copy, PartialEq)]
enum Zero {
    Omit,
    Keep,
}

struct Field {
    number: u32,
    json: &'static str,
    shape: Shape,
    zero: Zero,
}

/// A protobuf message: its Go type's name (for errors) and the fields kubelab reads.
struct Message {
    name: &'static str,
    fields: &'static [Field],
}

/// A Go value field: left out of the JSON when zero or empty.
const fn omit_zero(number: u32, json: &'static str, shape: Shape) -> Field {
    Field {
        number,
        json,
        shape,
        zero: Zero::Omit,
    }
}

/// A Go pointer field (or one JSON always has): kept whenever written.
const fn keep(number: u32, json: &'static str, shape: Shape) -> Field {
    Field {
        number,
        json,
        shape,
        zero: Zero::Keep,
    }
}

/// A Kubernetes protobuf object (with its `k8s\0` magic) as the JSON object it stands
/// for, `apiVersion` and `kind` included. Fails on a kind kubelab does not read from
/// protobuf, on malformed bytes, and on any non-zero field the schema lacks.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf object (no k8s\\0 magic)")?;
    let envelope = read_envelope(inner)?;
    let message = schema::root(&envelope.api_version, &envelope.kind).ok_or_else(|| {
        format!(
            "{} {}: kubelab does not read this kind as protobuf; {SEND_JSON}",
            envelope.api_version, envelope.kind
        )
    })?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), envelope.api_version.into());
    object.insert("kind".into(), envelope.kind.clone().into());
    object.extend(read_message(message, envelope.raw, &envelope.kind)?);
    Ok(Value::Object(object))
}

const SEND_JSON: &str = "send the object as JSON \
    (kubectl create … --dry-run=client -o yaml | kubectl apply -f -)";

/// `runtime.Unknown`: the type, and the object's own bytes.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
}

fn read_envelope(bytes: &[u8]) -> Result<Envelope<'_>, String> {
    let mut envelope = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
    };
    for field in Fields(bytes) {
        match field.map_err(|e| format!("Unknown: {e}"))? {
            (1, Wire::Bytes(b)) => {
                let meta = read_message(&schema::TYPE_META, b, "Unknown.typeMeta")?;
                envelope.api_version = text(&meta, "apiVersion");
                envelope.kind = text(&meta, "kind");
            }
            (2, Wire::Bytes(b)) => envelope.raw = b,
            (3, Wire::Bytes(b)) if !b.is_empty() => {
                return Err("Unknown: a contentEncoding is not supported".into())
            }
            // contentType: empty, or protobuf itself.
            (3 | 4, Wire::Bytes(_)) => {}
            (number, wire) => refuse_unknown(&schema::UNKNOWN, "Unknown", number, &wire)?,
        }
    }
    Ok(envelope)
}

fn text(object: &Map<String, Value>, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A message's fields as a JSON object; `path` (`Deployment.spec`) names it in errors.
fn read_message(message: &Message, bytes: &[u8], path: &str) -> Result<Map<String, Value>, String> {
    let mut object = Map::new();
    for field in Fields(bytes) {
        let (number, wire) = field.map_err(|e| format!("{path} ({}): {e}", message.name))?;
        match message.fields.iter().find(|f| f.number == number) {
            Some(field) => read_field(field, wire, path, &mut object)?,
            None => refuse_unknown(message, path, number, &wire)?,
        }
    }
    Ok(object)
}

/// One occurrence of a field, into `object`: set, appended to its list, or put in its map.
fn read_field(
    field: &Field,
    wire: Wire<'_>,
    path: &str,
    object: &mut Map<String, Value>,
) -> Result<(), String> {
    let path = format!("{path}.{}", field.json);
    match field.shape {
        Shape::List(item) => {
            if let Value::Array(items) = object.entry(field.json).or_insert(Value::Array(vec![])) {
                let item_path = format!("{path}[{}]", items.len());
                items.extend(read_value(*item, wire, &item_path)?);
            }
        }
        Shape::Map(value) => {
            let (key, value) = read_entry(*value, wire, &path)?;
            if let Value::Object(map) = object
                .entry(field.json)
                .or_insert(Value::Object(Map::new()))
            {
                map.insert(key, value);
            }
        }
        shape => match read_value(shape, wire, &path)? {
            Some(value) if field.zero == Zero::Keep || !is_zero(&value) => {
                object.insert(field.json.into(), value);
            }
            _ => {}
        },
    }
    Ok(())
}

/// A single value of `shape`; `None` for what JSON leaves out (the zero time).
fn read_value(shape: Shape, wire: Wire<'_>, path: &str) -> Result<Option<Value>, String> {
    let value = match (shape, wire) {
        (Shape::Str, Wire::Bytes(b)) => utf8(b, path)?.into(),
        // Sign-extended varints: the cast gives back the negative number.
        (Shape::Int, Wire::Varint(v)) => (v as i64).into(),
        (Shape::Bool, Wire::Varint(v)) => (v != 0).into(),
        (Shape::Msg(message), Wire::Bytes(b)) => Value::Object(read_message(message, b, path)?),
        (Shape::Time, Wire::Bytes(b)) => return read_time(b, path),
        (Shape::Quantity, Wire::Bytes(b)) => read_quantity(b, path)?,
        (Shape::IntOrString, Wire::Bytes(b)) => read_int_or_string(b, path)?,
        _ => return Err(format!("{path}: protobuf wire type does not fit the field")),
    };
    Ok(Some(value))
}

fn utf8(bytes: &[u8], path: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{path}: a string is not UTF-8"))
}

/// A map entry `{key = 1, value = 2}`; either may be left out when empty.
fn read_entry(shape: Shape, wire: Wire<'_>, path: &str) -> Result<(String, Value), String> {
    let Wire::Bytes(bytes) = wire else {
        return Err(format!("{path}: a map entry is not a message"));
    };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for field in Fields(bytes) {
        match field.map_err(|e| format!("{path}: {e}"))? {
            (1, Wire::Bytes(b)) => key = utf8(b, path)?,
            (2, wire) => value = read_value(shape, wire, &format!("{path}[{key}]"))?.into(),
            (number, _) => return Err(format!("{path}: a map entry with field {number}")),
        }
    }
    Ok((key, value))
}

fn read_time(bytes: &[u8], path: &str) -> Result<Option<Value>, String> {
    let time = read_message(&schema::TIME, bytes, path)?;
    let seconds = time.get("seconds").and_then(Value::as_i64);
    let Some(seconds) = seconds.filter(|s| *s != ZERO_TIME_SECONDS) else {
        return Ok(None);
    };
    let time = chrono::DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| format!("{path}: time out of range"))?;
    Ok(Some(
        time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into(),
    ))
}

fn read_quantity(bytes: &[u8], path: &str) -> Result<Value, String> {
    let quantity = read_message(&schema::QUANTITY, bytes, path)?;
    Ok(quantity
        .get("string")
        .cloned()
        .unwrap_or_else(|| "0".into()))
}

fn read_int_or_string(bytes: &[u8], path: &str) -> Result<Value, String> {
    let value = read_message(&schema::INT_OR_STRING, bytes, path)?;
    match value.get("type").and_then(Value::as_i64).unwrap_or(0) {
        0 => Ok(value.get("intVal").cloned().unwrap_or_else(|| 0.into())),
        1 => Ok(value.get("strVal").cloned().unwrap_or_else(|| "".into())),
        other => Err(format!("{path}: IntOrString of type {other}")),
    }
}

/// What `omitempty` leaves out.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// A field the schema lacks: fine when zero (Go writes its value fields always), an
/// error naming it otherwise.
fn refuse_unknown(
    message: &Message,
    path: &str,
    number: u32,
    wire: &Wire<'_>,
) -> Result<(), String> {
    if wire.is_zero(ZERO_DEPTH) {
        return Ok(());
    }
    Err(format!(
        "{path} ({}): protobuf field {number} is not read by kubelab; {SEND_JSON}",
        message.name
    ))
}

/// A field's value as written: the wire type says which.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(u64),
}

impl Wire<'_> {
    /// 0, or bytes that are empty or a message of zero fields only (to `depth`).
    fn is_zero(&self, depth: u32) -> bool {
        match self {
            Wire::Varint(v) | Wire::Fixed(v) => *v == 0,
            Wire::Bytes(b) => {
                b.is_empty()
                    || (depth > 0
                        && Fields(b).all(|f| f.is_ok_and(|(_, wire)| wire.is_zero(depth - 1))))
            }
        }
    }
}

/// The fields of a message's bytes, in order; stops after the first malformed one.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = next_field(&mut self.0);
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

fn next_field<'a>(buf: &mut &'a [u8]) -> Result<(u32, Wire<'a>), String> {
    let (number, wire_type) = decode_key(buf).map_err(|e| e.to_string())?;
    let wire = match wire_type {
        WireType::Varint => Wire::Varint(decode_varint(buf).map_err(|e| e.to_string())?),
        WireType::LengthDelimited => {
            let len = decode_varint(buf).map_err(|e| e.to_string())?;
            Wire::Bytes(take(buf, len)?)
        }
        WireType::SixtyFourBit => Wire::Fixed(fixed::<8>(buf)?),
        WireType::ThirtyTwoBit => Wire::Fixed(fixed::<4>(buf)?),
        WireType::StartGroup | WireType::EndGroup => {
            return Err(format!("field {number}: protobuf groups are not supported"))
        }
    };
    Ok((number, wire))
}

/// The next `len` bytes, if there are that many.
fn take<'a>(buf: &mut &'a [u8], len: u64) -> Result<&'a [u8], String> {
    let (head, tail) = usize::try_from(len)
        .ok()
        .and_then(|len| buf.split_at_checked(len))
        .ok_or("truncated protobuf field")?;
    *buf = tail;
    Ok(head)
}

/// A little-endian fixed32 or fixed64.
fn fixed<const N: usize>(buf: &mut &[u8]) -> Result<u64, String> {
    let mut bytes = [0u8; 8];
    bytes[..N].copy_from_slice(take(buf, N as u64)?);
    Ok(u64::from_le_bytes(bytes))
}
