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

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
