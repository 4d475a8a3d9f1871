//! NumPy `.npy` files (format version 1.0, `<f4` C-order arrays), so features can be compared with Python.
//! Writing is the few lines below; reading goes through the `npyz` crate.
//!
//! Layout (numpy's `format.py` documentation): the magic `\x93NUMPY`, version bytes `1 0`, a little-endian
//! `u16` header length, then an ASCII dict `{'descr': '<f4', 'fortran_order': False, 'shape': (a, b), }`
//! padded with spaces and a final newline so the data starts at a multiple of 64 bytes, then the values.

use std::io::Write;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Encodes a C-order `f32` array of `shape` as `.npy` bytes.
pub fn to_npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "shape");
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a `.npy` file atomically (temporary file, then rename).
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    let tmp = path.with_extension("npy.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&to_npy_bytes(shape, values))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Decodes `.npy` bytes holding a little-endian `f32` C-order array: `(shape, values)` (parsed
/// by the `npyz` crate, as every `.npy` the workspace reads).
pub fn from_npy_bytes(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("not a .npy file: {e}"))?;
    match npy.dtype() {
        npyz::DType::Plain(t) if t.to_string() == "<f4" => {}
        other => {
            return Err(format!(
                "only little-endian float32 is supported, the file holds {}",
                other.descr()
            ))
        }
    }
    if npy.order() != npyz::Order::C {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let values = npy.into_vec::<f32>().map_err(|e| e.to_string())?;
    Ok((shape, values))
}

/// Reads a `.npy` file of `f32` values.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    from_npy_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_aligned_header() {
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let bytes = to_npy_bytes(&[2, 3], &values);
        let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_end % 64, 0);
        assert_eq!(bytes[header_end - 1], b'\n');
        assert_eq!(from_npy_bytes(&bytes).unwrap(), (vec![2, 3], values));
        let one = to_npy_bytes(&[1], &[1.0]);
        assert_eq!(from_npy_bytes(&one).unwrap().0, vec![1]);
    }
}
