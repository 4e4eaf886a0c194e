//! Open Inference Protocol v2 (KServe / Triton / MLServer "v2 REST"), the
//! JSON form used by `tensor` remote models:
//!
//! ```text
//! POST /v2/models/<model>/infer
//! {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
//! -> {"outputs": [{"name": "probs", "shape": [1, 3], "datatype": "FP32", "data": [..]}], ..}
//! ```
//!
//! Tensor types map `fp32`/`fp64`/`i32`/`i64`/`u8` to `FP32`/`FP64`/
//! `INT32`/`INT64`/`UINT8`; `fp16`/`bf16` are refused. `data` is sent flat
//! (row-major, little-endian bytes decoded); answers may nest it. JSON has
//! no NaN or infinity, so such values are refused before sending.

use crate::error::{Failure, FailureCode};
use serde_json::{Value, json};
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

fn invalid(m: String) -> Failure {
    Failure::new(FailureCode::InvalidArgument, m)
}

fn datatype(t: TensorType) -> Option<(&'static str, usize)> {
    Some(match t {
        TensorType::Fp32 => ("FP32", 4),
        TensorType::Fp64 => ("FP64", 8),
        TensorType::I32 => ("INT32", 4),
        TensorType::I64 => ("INT64", 8),
        TensorType::U8 => ("UINT8", 1),
        TensorType::Fp16 | TensorType::Bf16 => return None,
    })
}

fn element(ty: TensorType, c: &[u8]) -> Option<Value> {
    Some(match ty {
        TensorType::Fp32 => {
            let v = f32::from_le_bytes(c.try_into().ok()?);
            Value::from(serde_json::Number::from_f64(f64::from(v))?)
        }
        TensorType::Fp64 => Value::from(serde_json::Number::from_f64(f64::from_le_bytes(
            c.try_into().ok()?,
        ))?),
        TensorType::I32 => Value::from(i32::from_le_bytes(c.try_into().ok()?)),
        TensorType::I64 => Value::from(i64::from_le_bytes(c.try_into().ok()?)),
        TensorType::U8 => Value::from(*c.first()?),
        TensorType::Fp16 | TensorType::Bf16 => return None,
    })
}

/// The request body for the guest's named tensors.
pub(crate) fn encode(model: &str, inputs: &[NamedTensor]) -> Result<Vec<u8>, Failure> {
    if inputs.is_empty() {
        return Err(invalid(format!("model {model}: no input tensors")));
    }
    let mut list = Vec::with_capacity(inputs.len());
    for NamedTensor { name, tensor } in inputs {
        let (dt, width) = datatype(tensor.ty).ok_or_else(|| {
            invalid(format!(
                "model {model}: tensor {name}: {:?} is not supported",
                tensor.ty
            ))
        })?;
        let elements = tensor
            .dimensions
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(u64::from(*d)));
        if elements.and_then(|n| n.checked_mul(width as u64)) != Some(tensor.data.len() as u64) {
            return Err(invalid(format!(
                "model {model}: tensor {name}: {} bytes do not match dimensions {:?} of {dt}",
                tensor.data.len(),
                tensor.dimensions
            )));
        }
        let data = tensor
            .data
            .chunks_exact(width)
            .map(|c| element(tensor.ty, c))
            .collect::<Option<Vec<Value>>>()
            .ok_or_else(|| {
                invalid(format!(
                    "model {model}: tensor {name}: NaN or infinity cannot be sent as JSON"
                ))
            })?;
        list.push(json!({"name": name, "shape": tensor.dimensions, "datatype": dt, "data": data}));
    }
    serde_json::to_vec(&json!({ "inputs": list })).map_err(|e| invalid(e.to_string()))
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// The server's answer as named tensors.
pub(crate) fn decode(model: &str, body: &[u8]) -> Result<Vec<NamedTensor>, Failure> {
    let bad = |m: String| {
        Failure::new(
            FailureCode::RuntimeError,
            format!("model {model}: malformed v2 response: {m}"),
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let outputs = v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"outputs\" array".into()))?;
    let mut result = Vec::with_capacity(outputs.len());
    for o in outputs {
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("an output has no name".into()))?;
        let shape = o
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|s| {
                s.iter()
                    .map(|d| d.as_u64().and_then(|d| u32::try_from(d).ok()))
                    .collect::<Option<Vec<u32>>>()
            })
            .ok_or_else(|| bad(format!("output {name}: bad shape")))?;
        let dt = o
            .get("datatype")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut flat = Vec::new();
        flatten(o.get("data").unwrap_or(&Value::Null), &mut flat);
        let count = shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(u64::from(*d)));
        if count != Some(flat.len() as u64) {
            return Err(bad(format!(
                "output {name}: {} values for shape {shape:?}",
                flat.len()
            )));
        }
        let bytes: Option<(TensorType, Vec<u8>)> = match dt {
            "FP32" => flat
                .iter()
                .map(|x| x.as_f64().map(|f| (f as f32).to_le_bytes()))
                .collect::<Option<Vec<_>>>()
                .map(|v| (TensorType::Fp32, v.concat())),
            "FP64" => flat
                .iter()
                .map(|x| x.as_f64().map(f64::to_le_bytes))
                .collect::<Option<Vec<_>>>()
                .map(|v| (TensorType::Fp64, v.concat())),
            "INT32" => flat
                .iter()
                .map(|x| {
                    x.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .map(i32::to_le_bytes)
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| (TensorType::I32, v.concat())),
            "INT64" => flat
                .iter()
                .map(|x| x.as_i64().map(i64::to_le_bytes))
                .collect::<Option<Vec<_>>>()
                .map(|v| (TensorType::I64, v.concat())),
            "UINT8" => flat
                .iter()
                .map(|x| x.as_u64().and_then(|i| u8::try_from(i).ok()))
                .collect::<Option<Vec<u8>>>()
                .map(|v| (TensorType::U8, v)),
            other => {
                return Err(bad(format!(
                    "output {name}: datatype {other:?} is not supported"
                )));
            }
        };
        let (ty, data) =
            bytes.ok_or_else(|| bad(format!("output {name}: values do not fit {dt}")))?;
        result.push(NamedTensor {
            name: name.to_string(),
            tensor: wasmtime_wasi_nn::Tensor::new(shape, ty, data),
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_nn::Tensor;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn encodes_named_tensors_flat() {
        let x = NamedTensor {
            name: "x".into(),
            tensor: Tensor::new(vec![1, 2], TensorType::Fp32, f32s(&[1.5, -2.0])),
        };
        let ids = NamedTensor {
            name: "ids".into(),
            tensor: Tensor::new(
                vec![2],
                TensorType::I64,
                [7i64, -1].iter().flat_map(|i| i.to_le_bytes()).collect(),
            ),
        };
        let body: Value = serde_json::from_slice(&encode("tensor-m", &[x, ids]).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"inputs": [
                {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, -2.0]},
                {"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, -1]}
            ]})
        );
        let nan = NamedTensor {
            name: "x".into(),
            tensor: Tensor::new(vec![1], TensorType::Fp32, f32s(&[f32::NAN])),
        };
        assert_eq!(
            encode("tensor-m", &[nan]).unwrap_err().code,
            FailureCode::InvalidArgument
        );
        let ragged = NamedTensor {
            name: "x".into(),
            tensor: Tensor::new(vec![2], TensorType::Fp32, vec![0; 7]),
        };
        assert!(encode("tensor-m", &[ragged]).is_err());
    }

    #[test]
    fn decodes_flat_and_nested_outputs() {
        let body = br#"{"model_name":"m","outputs":[
            {"name":"probs","shape":[1,2],"datatype":"FP32","data":[[0.25,0.75]]},
            {"name":"label","shape":[1],"datatype":"INT32","data":[1]}]}"#;
        let out = decode("tensor-m", body).unwrap();
        assert_eq!(out[0].name, "probs");
        assert_eq!(out[0].tensor.dimensions, vec![1, 2]);
        assert_eq!(out[0].tensor.data, f32s(&[0.25, 0.75]));
        assert_eq!(out[1].tensor.ty, TensorType::I32);
        assert_eq!(out[1].tensor.data, 1i32.to_le_bytes());
        for bad in [
            &br#"{"error":"x"}"#[..],
            br#"{"outputs":[{"name":"y","shape":[3],"datatype":"FP32","data":[1]}]}"#,
            b"nope",
        ] {
            let code = decode("tensor-m", bad).err().map(|f| f.code);
            assert_eq!(code, Some(FailureCode::RuntimeError));
        }
    }
}
