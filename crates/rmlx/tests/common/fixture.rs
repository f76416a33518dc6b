//! The NumPy/MLX fixture of `scripts/fixtures/ops_numpy_elementwise.py`, shared by the
//! elementwise and reduction tests.

use rmlx::{ops, Array, Dtype};
use serde_json::Value;

use super::assert_close;

/// Fixture cases and tensors.
pub struct Fixture {
    pub st: safetensors::SafeTensors<'static>,
    pub cases: Vec<Value>,
}

pub fn load_fixture() -> Fixture {
    load_fixture_dir("ops_elementwise")
}

/// The fixture in `tests/fixtures/<name>` (same layout: `data.safetensors`, `cases.json`).
pub fn load_fixture_dir(name: &str) -> Fixture {
    let dir = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(format!("{dir}/data.safetensors")).expect("fixture data");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/cases.json")).expect("cases"))
            .unwrap();
    // leaked once per test binary so the parsed header can borrow it
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    Fixture {
        st,
        cases: meta["cases"].as_array().unwrap().clone(),
    }
}

impl Fixture {
    /// A stored tensor as an array of its stored dtype.
    pub fn tensor(&self, key: &str) -> Array {
        let t = self.st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let dtype = match t.dtype() {
            safetensors::Dtype::BOOL => Dtype::Bool,
            safetensors::Dtype::U8 => Dtype::U8,
            safetensors::Dtype::U32 => Dtype::U32,
            safetensors::Dtype::I32 => Dtype::I32,
            safetensors::Dtype::I64 => Dtype::I64,
            safetensors::Dtype::F16 => Dtype::F16,
            safetensors::Dtype::F32 => Dtype::F32,
            d => panic!("unexpected fixture dtype {d:?}"),
        };
        Array::from_bytes(t.data(), t.shape(), dtype).unwrap()
    }

    /// Input `i` of a case: converted to its dtype and viewed as recorded.
    pub fn input(&self, case: &Value, i: usize) -> Array {
        let spec = &case["inputs"][i];
        let a = ops::astype(
            &self.tensor(spec["key"].as_str().unwrap()),
            Dtype::parse(spec["dtype"].as_str().unwrap()).unwrap(),
        );
        let v = &spec["view"];
        if let Some(p) = v.get("t") {
            let perm: Vec<i32> = p
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap() as i32)
                .collect();
            return ops::transpose(&a, Some(&perm)).unwrap();
        }
        if let Some(s) = v.get("s") {
            let (mut st, mut sp, mut stp) = (vec![], vec![], vec![]);
            for r in s.as_array().unwrap() {
                st.push(r[0].as_i64().unwrap());
                sp.push(r[1].as_i64().unwrap());
                stp.push(r[2].as_i64().unwrap());
            }
            return ops::slice(&a, &st, &sp, &stp).unwrap();
        }
        a
    }

    /// Compares `got` with the case's expected output: dtype, shape, then values.
    pub fn check(&self, case: &Value, got: &Array) {
        let name = case["name"].as_str().unwrap();
        let want_dtype = Dtype::parse(case["out_dtype"].as_str().unwrap()).unwrap();
        assert_eq!(got.dtype(), want_dtype, "{name}: dtype");
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.shape(), shape.as_slice(), "{name}: shape");
        let t = self.st.tensor(case["out"].as_str().unwrap()).unwrap();
        let want: Vec<f64> = t
            .data()
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if want_dtype.is_float() {
            let (rtol, atol) = (
                case["rtol"].as_f64().unwrap() as f32,
                case["atol"].as_f64().unwrap() as f32,
            );
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_close(&got.to_vec::<f32>().unwrap(), &want, rtol, atol, name);
        } else {
            // integers and bools compare exactly
            let g = got.to_vec::<i64>().unwrap();
            let w: Vec<i64> = want.iter().map(|&v| v as i64).collect();
            assert_eq!(g, w, "{name}");
        }
    }
}
