//! Prometheus' HTTP API answers (`/api/v1/query`, `/api/v1/query_range`), decoded straight from
//! the body with borrowed strings: one label per series is kept, nothing else is copied.
//!
//! The format (Prometheus docs, "HTTP API"): `{"status": "success", "data": {"resultType":
//! "vector" | "matrix" | "scalar" | "string", "result": ...}, "warnings": [...]}`, or on error
//! `{"status": "error", "errorType": "bad_data", "error": "..."}`. A sample is `[<unix seconds>,
//! "<value>"]`, the value a string because it may be `NaN`, `+Inf` or `-Inf`. A series of a
//! native histogram carries `histogram`/`histograms` instead of `value`/`values`: it has no
//! float sample and is skipped.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A whole answer, success or error.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer<'a> {
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(borrow, default)]
    pub data: Option<Data<'a>>,
    #[serde(rename = "errorType", borrow, default)]
    pub error_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
}

/// The `data` of a successful answer.
#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
pub(crate) enum Data<'a> {
    Vector(#[serde(borrow)] Vec<InstantSeries<'a>>),
    Matrix(#[serde(borrow)] Vec<RangeSeries<'a>>),
    Scalar(IgnoredAny),
    String(IgnoredAny),
}

impl Data<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Data::Vector(_) => "vector",
            Data::Matrix(_) => "matrix",
            Data::Scalar(_) => "scalar",
            Data::String(_) => "string",
        }
    }
}

/// One series of an instant vector.
#[derive(Debug, Deserialize)]
pub(crate) struct InstantSeries<'a> {
    #[serde(borrow)]
    pub metric: Labels<'a>,
    /// `None` for a native histogram's series.
    #[serde(default)]
    pub value: Option<Sample>,
}

/// One series of a range matrix.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeSeries<'a> {
    #[serde(borrow)]
    pub metric: Labels<'a>,
    #[serde(default)]
    pub values: Vec<Sample>,
}

/// A series' labels, in the order of the answer (a handful each: a list beats a map).
#[derive(Debug, Default)]
pub(crate) struct Labels<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Labels<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Labels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of label names to values")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut labels = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<Borrowed<'a>, Borrowed<'a>>()? {
                    labels.push((k.0, v.0));
                }
                Ok(Labels(labels))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string borrowed from the body when it has no escapes, owned when it has.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `Cow<str>`'s own impl always copies; this visitor borrows whenever serde_json can.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Borrowed)
    }
}

/// `[<unix seconds>, "<value>"]`: the value parsed (`NaN`, `+Inf`, `-Inf` included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub at_secs: f64,
    pub value: f64,
}

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sample;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample [<unix seconds>, \"<value>\"]")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Sample, S::Error> {
                let at_secs: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let text: Borrowed<'de> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                let value = text.0.parse::<f64>().map_err(|_| {
                    de::Error::invalid_value(de::Unexpected::Str(&text.0), &"a number, NaN or ±Inf")
                })?;
                Ok(Sample { at_secs, value })
            }
        }
        d.deserialize_seq(V)
    }
}

/// Decodes a body; the error is serde_json's, with its line and column.
pub(crate) fn decode(body: &[u8]) -> Result<Answer<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

// ---- an instant vector, streamed ---------------------------------------------------------------

/// The kind of an answer's `data`, as [`each_instant`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Vector,
    Matrix,
    Scalar,
    String,
    /// `result` came before `resultType`: its series were skipped, not handed over. Prometheus
    /// writes the type first; anything else is decoded whole with [`decode`].
    Unordered,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vector => "vector",
            Kind::Matrix => "matrix",
            Kind::Scalar => "scalar",
            Kind::String => "string",
            Kind::Unordered => "result before its resultType",
        }
    }
}

/// What [`each_instant`] saw of an answer besides its series: the fields of [`Answer`].
#[derive(Debug)]
pub(crate) struct Streamed<'a> {
    pub status: Cow<'a, str>,
    /// `None` when the answer had no `data`.
    pub kind: Option<Kind>,
    pub error_type: Option<Cow<'a, str>>,
    pub error: Option<Cow<'a, str>>,
}

/// Decodes an instant query's answer as [`decode`] does, but hands each series of a vector to
/// `each` as it is read (the value of the label `label`, if the series has it, and its sample)
/// instead of collecting them: nothing is allocated per series. A fleet's answer holds tens of
/// thousands of series, and collecting them (a label list per series, then a map) was most of
/// the cost of reading it.
///
/// Series are handed over before the status is known (`status` may come last), so on an
/// error answer, or an error part-way, `each` has seen some series: its caller drops them.
pub(crate) fn each_instant<'a, F>(
    body: &'a [u8],
    label: &str,
    each: &mut F,
) -> Result<Streamed<'a>, serde_json::Error>
where
    F: FnMut(Option<&str>, Option<Sample>),
{
    let mut de = serde_json::Deserializer::from_slice(body);
    let streamed = AnswerSeed { label, each }.deserialize(&mut de)?;
    de.end()?;
    Ok(streamed)
}

/// Takes a field's value once; a second time is an error, as serde's derive says it.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, field: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

struct AnswerSeed<'s, F> {
    label: &'s str,
    each: &'s mut F,
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> DeserializeSeed<'de> for AnswerSeed<'_, F> {
    type Value = Streamed<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> Visitor<'de> for AnswerSeed<'_, F> {
    type Value = Streamed<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus answer")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let (mut status, mut data, mut error_type, mut error) = (None, None, None, None);
        while let Some(key) = map.next_key::<Borrowed<'de>>()? {
            match key.0.as_ref() {
                "status" => once(&mut status, map.next_value::<Borrowed>()?.0, "status")?,
                "data" => {
                    let seed = DataSeed {
                        label: self.label,
                        each: &mut *self.each,
                    };
                    once(&mut data, map.next_value_seed(seed)?, "data")?
                }
                "errorType" => once(
                    &mut error_type,
                    map.next_value::<Option<Borrowed>>()?.map(|b| b.0),
                    "errorType",
                )?,
                "error" => once(
                    &mut error,
                    map.next_value::<Option<Borrowed>>()?.map(|b| b.0),
                    "error",
                )?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Streamed {
            status: status.ok_or_else(|| de::Error::missing_field("status"))?,
            kind: data.flatten(),
            error_type: error_type.flatten(),
            error: error.flatten(),
        })
    }
}

/// `data`: `null` or `{"resultType": .., "result": ..}`.
struct DataSeed<'s, F> {
    label: &'s str,
    each: &'s mut F,
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> DeserializeSeed<'de> for DataSeed<'_, F> {
    type Value = Option<Kind>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> Visitor<'de> for DataSeed<'_, F> {
    type Value = Option<Kind>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the data of a Prometheus answer")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        const KINDS: &[&str] = &["vector", "matrix", "scalar", "string"];
        let (mut kind, mut result) = (None, None);
        while let Some(key) = map.next_key::<Borrowed<'de>>()? {
            match key.0.as_ref() {
                "resultType" => {
                    let name = map.next_value::<Borrowed>()?.0;
                    let k = match name.as_ref() {
                        "vector" => Kind::Vector,
                        "matrix" => Kind::Matrix,
                        "scalar" => Kind::Scalar,
                        "string" => Kind::String,
                        other => return Err(de::Error::unknown_variant(other, KINDS)),
                    };
                    once(&mut kind, k, "resultType")?;
                }
                "result" => {
                    let read = match kind {
                        Some(Kind::Vector) => {
                            let seed = VectorSeed {
                                label: self.label,
                                each: &mut *self.each,
                            };
                            map.next_value_seed(seed)?;
                            Kind::Vector
                        }
                        Some(Kind::Matrix) => {
                            // Read to be checked as `decode` checks it; the caller refuses it.
                            map.next_value::<Vec<RangeSeries>>()?;
                            Kind::Matrix
                        }
                        Some(k) => {
                            map.next_value::<IgnoredAny>()?;
                            k
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            Kind::Unordered
                        }
                    };
                    once(&mut result, read, "result")?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        kind.ok_or_else(|| de::Error::missing_field("resultType"))?;
        result
            .map(Some)
            .ok_or_else(|| de::Error::missing_field("result"))
    }
}

/// `result` of a vector: each series handed over as it is read.
struct VectorSeed<'s, F> {
    label: &'s str,
    each: &'s mut F,
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> DeserializeSeed<'de> for VectorSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> Visitor<'de> for VectorSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of series")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq
            .next_element_seed(SeriesSeed {
                label: self.label,
                each: &mut *self.each,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One series of a vector: its `metric` (only `label` kept) and `value`.
struct SeriesSeed<'s, F> {
    label: &'s str,
    each: &'s mut F,
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> DeserializeSeed<'de> for SeriesSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(Option<&str>, Option<Sample>)> Visitor<'de> for SeriesSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a series")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let (mut found, mut value) = (None, None);
        while let Some(key) = map.next_key::<Borrowed<'de>>()? {
            match key.0.as_ref() {
                "metric" => {
                    let seed = LabelSeed { label: self.label };
                    once(&mut found, map.next_value_seed(seed)?, "metric")?
                }
                "value" => once(&mut value, map.next_value::<Option<Sample>>()?, "value")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let found = found.ok_or_else(|| de::Error::missing_field("metric"))?;
        (self.each)(found.as_deref(), value.flatten());
        Ok(())
    }
}

/// A series' labels, of which only `label`'s value is kept (the first, as [`Labels::get`]
/// finds it); the others are still read as strings, so what [`decode`] refuses is refused.
struct LabelSeed<'s> {
    label: &'s str,
}

impl<'de> DeserializeSeed<'de> for LabelSeed<'_> {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelSeed<'_> {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of label names to values")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut found = None;
        while let Some((k, v)) = map.next_entry::<Borrowed<'de>, Borrowed<'de>>()? {
            if found.is_none() && k.0 == self.label {
                found = Some(v.0);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_keeps_its_labels_and_special_values() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"member":"pg1","job":"x"},"value":[1795708800.5,"0.42"]},
            {"metric":{"member":"p\u0067\"2"},"value":[1795708800,"NaN"]},
            {"metric":{"member":"pg3"},"value":[1795708800,"+Inf"]},
            {"metric":{"member":"pg4"},"value":[1795708800,"-Inf"]},
            {"metric":{"member":"pg5"},"histogram":[1795708800,{"count":"1"}]}]}}"#;
        let a = decode(body).unwrap();
        assert_eq!(a.status, "success");
        let Some(Data::Vector(v)) = a.data else {
            panic!("not a vector")
        };
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].metric.get("member"), Some("pg1"));
        assert_eq!(v[0].metric.get("job"), Some("x"));
        assert_eq!(v[0].metric.get("nope"), None);
        assert_eq!(
            v[0].value,
            Some(Sample {
                at_secs: 1795708800.5,
                value: 0.42
            })
        );
        // An escaped label value is decoded, not borrowed raw.
        assert_eq!(v[1].metric.get("member"), Some("pg\"2"));
        assert!(v[1].value.unwrap().value.is_nan());
        assert_eq!(v[2].value.unwrap().value, f64::INFINITY);
        assert_eq!(v[3].value.unwrap().value, f64::NEG_INFINITY);
        assert_eq!(v[4].value, None, "a histogram has no float sample");
    }

    /// Per series: the label asked for and the sample.
    type HandedOver = Vec<(Option<String>, Option<Sample>)>;

    /// What `each_instant` hands over, and what it says of the rest of the answer.
    fn streamed(body: &[u8], label: &str) -> (Streamed<'static>, HandedOver) {
        let mut seen = Vec::new();
        let s = each_instant(body, label, &mut |k: Option<&str>, v| {
            seen.push((k.map(str::to_string), v))
        })
        .unwrap();
        let owned = Streamed {
            status: Cow::Owned(s.status.into_owned()),
            kind: s.kind,
            error_type: s.error_type.map(|t| Cow::Owned(t.into_owned())),
            error: s.error.map(|e| Cow::Owned(e.into_owned())),
        };
        (owned, seen)
    }

    #[test]
    fn a_streamed_vector_hands_over_what_decode_collects() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"x","member":"pg1","member":"dup"},"value":[1795708800.5,"0.42"]},
            {"value":[1795708800,"NaN"],"metric":{"member":"p\u0067\"2"}},
            {"metric":{"job":"y"},"value":[1795708800,"1"]},
            {"metric":{"member":"pg5"},"histogram":[1795708800,{"count":"1"}]}]},"warnings":["w"]}"#;
        let (s, seen) = streamed(body, "member");
        assert_eq!((s.status.as_ref(), s.kind), ("success", Some(Kind::Vector)));
        let Some(Data::Vector(whole)) = decode(body).unwrap().data else {
            panic!("not a vector")
        };
        let want: Vec<_> = whole
            .iter()
            .map(|w| (w.metric.get("member").map(str::to_string), w.value))
            .collect();
        assert_eq!(seen.len(), want.len());
        for (a, b) in seen.iter().zip(&want) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.map(|s| s.at_secs), b.1.map(|s| s.at_secs));
            assert_eq!(
                a.1.map(|s| s.value.to_bits()),
                b.1.map(|s| s.value.to_bits())
            );
        }
        assert_eq!(
            seen[0].0.as_deref(),
            Some("pg1"),
            "the first of a repeated label"
        );
    }

    #[test]
    fn a_streamed_answer_says_what_it_was_without_series() {
        let (s, seen) = streamed(
            br#"{"data":{"result":[{"metric":{"member":"a"},"value":[1,"1"]}],"resultType":"vector"},"status":"success"}"#,
            "member",
        );
        assert_eq!(s.kind, Some(Kind::Unordered));
        assert!(
            seen.is_empty(),
            "nothing handed over before the type is known"
        );
        let (s, _) = streamed(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
            "member",
        );
        assert_eq!(s.kind, Some(Kind::Scalar));
        let (s, _) = streamed(br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#, "member");
        assert_eq!(s.kind, Some(Kind::Matrix));
        let (s, _) = streamed(
            br#"{"status":"error","errorType":"bad_data","error":"parse error","data":null}"#,
            "member",
        );
        assert_eq!(
            (
                s.status.as_ref(),
                s.kind,
                s.error_type.as_deref(),
                s.error.as_deref()
            ),
            ("error", None, Some("bad_data"), Some("parse error"))
        );
        for broken in [
            &br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"zero"]}]}}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"member":1},"value":[1,"1"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"tensor","result":[]}}"#,
            br#"{"status":"success","status":"success","data":null}"#,
            br#"{"data":null}"#,
            br#"{"status":"success","data":{"resultType":"vector"}} x"#,
        ] {
            assert!(each_instant(broken, "member", &mut |_, _| {}).is_err());
            assert!(decode(broken).is_err(), "decode refuses it too");
        }
    }

    #[test]
    fn an_error_answer_and_the_other_result_types_decode() {
        let a =
            decode(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#).unwrap();
        assert_eq!(
            (
                a.status.as_ref(),
                a.error_type.as_deref(),
                a.error.as_deref()
            ),
            ("error", Some("bad_data"), Some("parse error"))
        );
        let a = decode(br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#)
            .unwrap();
        assert_eq!(a.data.map(|d| d.kind()), Some("scalar"));
        // resultType after result: serde buffers, still decodes.
        let a = decode(
            br#"{"data":{"result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}],"resultType":"matrix"},"status":"success","warnings":["w"]}"#,
        )
        .unwrap();
        let Some(Data::Matrix(m)) = a.data else {
            panic!("not a matrix")
        };
        assert_eq!(m[0].values.len(), 2);
    }

    #[test]
    fn broken_samples_are_errors_with_a_position() {
        for body in [
            &br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"zero"]}]}}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1",2]}]}}"#,
            br#"{"status":"success","data":{"resultType":"tensor","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"vec"#,
        ] {
            let e = decode(body).unwrap_err();
            assert!(e.line() >= 1 && e.column() > 0, "{e}");
        }
    }
}
