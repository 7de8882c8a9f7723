//! A decoder for JPEG extended sequential (Huffman) images of 8 or 12 bits, the DICOM
//! transfer syntax 1.2.840.10008.1.2.4.51.
//!
//! The jpeg-decoder crate used by dicom-pixeldata refuses 12-bit DCT data, yet 12-bit JPEG
//! is common in older CT and MR archives. This is ITU-T T.81 sequential decoding: Huffman
//! entropy decoding, dequantisation, an exact separable float IDCT, level shift and
//! clamping. Components keep their sample values (no colour transform: DICOM 12-bit JPEG is
//! greyscale in practice); subsampled components are replicated to full size.

use super::layout::PixelLayout;

#[derive(Clone, Copy, Default)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
}

#[derive(Clone, Default)]
struct Huffman {
    /// (code length, code) -> symbol, as canonical lookup: for each length the first code,
    /// the index of its first symbol and the number of codes.
    max_code: [i32; 18],
    val_offset: [i32; 18],
    symbols: Vec<u8>,
    present: bool,
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Self {
        let mut max_code = [-1i32; 18];
        let mut val_offset = [0i32; 18];
        let mut code = 0i32;
        let mut index = 0i32;
        for length in 1..=16 {
            let count = counts[length - 1] as i32;
            if count > 0 {
                val_offset[length] = index - code;
                code += count;
                index += count;
                max_code[length] = code - 1;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        Huffman {
            max_code,
            val_offset,
            symbols,
            present: true,
        }
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    position: usize,
    bits: u64,
    count: u32,
    hit_marker: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            position: 0,
            bits: 0,
            count: 0,
            hit_marker: false,
        }
    }

    fn fill(&mut self) {
        while self.count <= 56 {
            let mut byte = 0u8;
            if !self.hit_marker && self.position < self.data.len() {
                byte = self.data[self.position];
                if byte == 0xFF {
                    let next = self.data.get(self.position + 1).copied().unwrap_or(0);
                    if next == 0x00 {
                        self.position += 2;
                    } else {
                        // A marker: feed zeros until the caller handles it.
                        self.hit_marker = true;
                        byte = 0;
                    }
                } else {
                    self.position += 1;
                }
            }
            self.bits |= (byte as u64) << (56 - self.count);
            self.count += 8;
        }
    }

    fn bit(&mut self) -> u32 {
        if self.count == 0 {
            self.fill();
        }
        let bit = (self.bits >> 63) as u32;
        self.bits <<= 1;
        self.count -= 1;
        bit
    }

    fn receive(&mut self, length: u32) -> i32 {
        if length == 0 {
            return 0;
        }
        if self.count < length {
            self.fill();
        }
        let value = (self.bits >> (64 - length)) as i32;
        self.bits <<= length;
        self.count -= length;
        value
    }

    fn decode(&mut self, table: &Huffman) -> Result<u8, String> {
        let mut code = 0i32;
        for length in 1..=16 {
            code = (code << 1) | self.bit() as i32;
            if code <= table.max_code[length] {
                let index = (code + table.val_offset[length]) as usize;
                return table
                    .symbols
                    .get(index)
                    .copied()
                    .ok_or_else(|| "bad Huffman code".to_string());
            }
        }
        Err("corrupt JPEG data: Huffman code longer than 16 bits".into())
    }

    /// Skip to after the next RSTn marker and reset the bit buffer.
    fn restart(&mut self) {
        self.bits = 0;
        self.count = 0;
        self.hit_marker = false;
        while self.position + 1 < self.data.len() {
            if self.data[self.position] == 0xFF
                && (0xD0..=0xD7).contains(&self.data[self.position + 1])
            {
                self.position += 2;
                return;
            }
            self.position += 1;
        }
    }
}

fn extend(value: i32, length: u32) -> i32 {
    if length == 0 {
        0
    } else if value < (1 << (length - 1)) {
        value - (1 << length) + 1
    } else {
        value
    }
}

const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

fn idct_8x8(coefficients: &[f64; 64], out: &mut [f64; 64]) {
    // Separable exact IDCT: f(x) = 1/2 sum_u C(u) F(u) cos((2x+1) u pi / 16).
    let mut basis = [[0.0f64; 8]; 8];
    for (x, row) in basis.iter_mut().enumerate() {
        for (u, value) in row.iter_mut().enumerate() {
            let c = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            *value =
                0.5 * c * (((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI) / 16.0).cos();
        }
    }
    let mut temp = [0.0f64; 64];
    for v in 0..8 {
        for x in 0..8 {
            temp[v * 8 + x] = (0..8).map(|u| basis[x][u] * coefficients[v * 8 + u]).sum();
        }
    }
    for y in 0..8 {
        for x in 0..8 {
            out[y * 8 + x] = (0..8).map(|v| basis[y][v] * temp[v * 8 + x]).sum();
        }
    }
}

/// Decode one frame of JPEG data into interleaved samples.
pub fn decode(data: &[u8], layout: &PixelLayout) -> Result<Vec<i64>, String> {
    let mut quant = [[0u16; 64]; 4];
    let mut dc_tables: [Huffman; 4] = Default::default();
    let mut ac_tables: [Huffman; 4] = Default::default();
    let mut components: Vec<Component> = Vec::new();
    let (mut width, mut height, mut precision) = (0usize, 0usize, 8u32);
    let mut restart_interval = 0usize;
    let mut planes: Vec<Vec<f64>> = Vec::new();
    let mut position = 0usize;
    let mut frame_seen = false;
    let mut scan_seen = false;

    let read_u16 = |p: usize| -> Result<usize, String> {
        data.get(p..p + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| "JPEG data is truncated".to_string())
    };

    while position + 1 < data.len() {
        if data[position] != 0xFF {
            position += 1;
            continue;
        }
        let marker = data[position + 1];
        position += 2;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 | 0xFF => {
                if marker == 0xFF {
                    position -= 1;
                }
                continue;
            }
            0xD9 => break,
            _ => {}
        }
        let length = read_u16(position)?;
        let segment = data
            .get(position + 2..position + length)
            .ok_or_else(|| "JPEG data is truncated".to_string())?;
        match marker {
            0xDB => {
                let mut offset = 0;
                while offset < segment.len() {
                    let table_precision = segment[offset] >> 4;
                    let id = (segment[offset] & 0x0F) as usize % 4;
                    offset += 1;
                    for k in 0..64 {
                        quant[id][ZIGZAG[k]] = if table_precision == 0 {
                            *segment.get(offset + k).ok_or("truncated DQT")? as u16
                        } else {
                            let b = segment
                                .get(offset + 2 * k..offset + 2 * k + 2)
                                .ok_or("truncated DQT")?;
                            u16::from_be_bytes([b[0], b[1]])
                        };
                    }
                    offset += if table_precision == 0 { 64 } else { 128 };
                }
            }
            0xC4 => {
                let mut offset = 0;
                while offset + 17 <= segment.len() {
                    let class = segment[offset] >> 4;
                    let id = (segment[offset] & 0x0F) as usize % 4;
                    let counts: [u8; 16] = segment[offset + 1..offset + 17]
                        .try_into()
                        .map_err(|_| "bad DHT")?;
                    let total: usize = counts.iter().map(|&c| c as usize).sum();
                    let symbols = segment
                        .get(offset + 17..offset + 17 + total)
                        .ok_or("truncated DHT")?
                        .to_vec();
                    let table = Huffman::new(&counts, symbols);
                    if class == 0 {
                        dc_tables[id] = table;
                    } else {
                        ac_tables[id] = table;
                    }
                    offset += 17 + total;
                }
            }
            0xDD => restart_interval = read_u16(position + 2)?,
            0xC0 | 0xC1 => {
                precision = segment[0] as u32;
                height = u16::from_be_bytes([segment[1], segment[2]]) as usize;
                width = u16::from_be_bytes([segment[3], segment[4]]) as usize;
                let count = segment[5] as usize;
                components = (0..count)
                    .map(|i| {
                        let c = segment.get(6 + 3 * i..9 + 3 * i).ok_or("truncated SOF")?;
                        Ok(Component {
                            id: c[0],
                            h: (c[1] >> 4).max(1) as usize,
                            v: (c[1] & 0x0F).max(1) as usize,
                            quant: (c[2] % 4) as usize,
                            ..Component::default()
                        })
                    })
                    .collect::<Result<_, String>>()?;
                if height == 0 {
                    height = layout.rows as usize;
                }
                frame_seen = true;
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!(
                    "JPEG process SOF{} is not supported in transfer syntax 1.2.840.10008.1.2.4.51",
                    marker - 0xC0
                ));
            }
            0xDA => {
                if !frame_seen {
                    return Err("JPEG scan before frame header".into());
                }
                let count = segment[0] as usize;
                let mut scan_components = Vec::with_capacity(count);
                for i in 0..count {
                    let id = segment[1 + 2 * i];
                    let tables = segment[2 + 2 * i];
                    let index = components
                        .iter()
                        .position(|c| c.id == id)
                        .ok_or("JPEG scan names an unknown component")?;
                    components[index].dc_table = (tables >> 4) as usize % 4;
                    components[index].ac_table = (tables & 0x0F) as usize % 4;
                    scan_components.push(index);
                }
                if planes.is_empty() {
                    planes = vec![Vec::new(); components.len()];
                }
                let entropy_start = position + length;
                let consumed = decode_scan(
                    &data[entropy_start..],
                    &components,
                    &scan_components,
                    &quant,
                    &dc_tables,
                    &ac_tables,
                    width,
                    height,
                    precision,
                    restart_interval,
                    &mut planes,
                )?;
                position = entropy_start + consumed;
                scan_seen = true;
                continue;
            }
            _ => {}
        }
        position += length;
    }
    if !scan_seen {
        return Err("JPEG data has no scan".into());
    }
    // Crop/replicate each component plane to full size and interleave.
    let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
    let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
    let mcux = width.div_ceil(8 * h_max);
    let max_value = ((1u64 << precision) - 1) as f64;
    let out_width = layout.cols as usize;
    let out_height = layout.rows as usize;
    let mut out = vec![0i64; out_width * out_height * components.len()];
    for (ci, component) in components.iter().enumerate() {
        let plane_width = mcux * component.h * 8;
        for y in 0..out_height.min(height) {
            for x in 0..out_width.min(width) {
                let sx = x * component.h / h_max;
                let sy = y * component.v / v_max;
                let value = planes[ci]
                    .get(sy * plane_width + sx)
                    .copied()
                    .unwrap_or(0.0);
                out[(y * out_width + x) * components.len() + ci] =
                    value.round().clamp(0.0, max_value) as i64;
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn decode_scan(
    data: &[u8],
    components: &[Component],
    scan: &[usize],
    quant: &[[u16; 64]; 4],
    dc_tables: &[Huffman; 4],
    ac_tables: &[Huffman; 4],
    width: usize,
    height: usize,
    precision: u32,
    restart_interval: usize,
    planes: &mut [Vec<f64>],
) -> Result<usize, String> {
    let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
    let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
    let mcux = width.div_ceil(8 * h_max);
    let mcuy = height.div_ceil(8 * v_max);
    for &ci in scan {
        let component = &components[ci];
        if !dc_tables[component.dc_table].present || !ac_tables[component.ac_table].present {
            return Err("JPEG scan uses an undefined Huffman table".into());
        }
        let size = mcux * component.h * 8 * mcuy * component.v * 8;
        if planes[ci].len() < size {
            planes[ci] = vec![0.0; size];
        }
    }
    let shift = (1u64 << (precision - 1)) as f64;
    let mut reader = BitReader::new(data);
    let mut predictions = vec![0i32; components.len()];
    // A non-interleaved scan (one component) walks blocks, not MCUs.
    let single = scan.len() == 1;
    let (units_x, units_y) = if single {
        let c = &components[scan[0]];
        (
            (width * c.h).div_ceil(8 * h_max),
            (height * c.v).div_ceil(8 * v_max),
        )
    } else {
        (mcux, mcuy)
    };
    let mut coefficients = [0.0f64; 64];
    let mut pixels = [0.0f64; 64];
    let mut units_done = 0usize;
    for unit_y in 0..units_y {
        for unit_x in 0..units_x {
            if restart_interval > 0 && units_done > 0 && units_done % restart_interval == 0 {
                reader.restart();
                predictions.iter_mut().for_each(|p| *p = 0);
            }
            units_done += 1;
            for &ci in scan {
                let component = &components[ci];
                let (blocks_h, blocks_v) = if single {
                    (1, 1)
                } else {
                    (component.h, component.v)
                };
                for block_y in 0..blocks_v {
                    for block_x in 0..blocks_h {
                        coefficients.fill(0.0);
                        let dc_length = reader.decode(&dc_tables[component.dc_table])? as u32;
                        let diff = extend(reader.receive(dc_length), dc_length);
                        predictions[ci] += diff;
                        let table = &quant[component.quant];
                        coefficients[0] = predictions[ci] as f64 * table[0] as f64;
                        let mut k = 1;
                        while k < 64 {
                            let symbol = reader.decode(&ac_tables[component.ac_table])?;
                            let run = (symbol >> 4) as usize;
                            let size = (symbol & 0x0F) as u32;
                            if size == 0 {
                                if run == 15 {
                                    k += 16;
                                    continue;
                                }
                                break;
                            }
                            k += run;
                            if k > 63 {
                                return Err("corrupt JPEG data: coefficient index past 63".into());
                            }
                            let value = extend(reader.receive(size), size);
                            coefficients[ZIGZAG[k]] = value as f64 * table[ZIGZAG[k]] as f64;
                            k += 1;
                        }
                        idct_8x8(&coefficients, &mut pixels);
                        let plane_width = mcux * component.h * 8;
                        let (bx, by) = if single {
                            (unit_x * 8, unit_y * 8)
                        } else {
                            (
                                (unit_x * component.h + block_x) * 8,
                                (unit_y * component.v + block_y) * 8,
                            )
                        };
                        for y in 0..8 {
                            let row = (by + y) * plane_width + bx;
                            let Some(target) = planes[ci].get_mut(row..row + 8) else {
                                continue;
                            };
                            for x in 0..8 {
                                target[x] = pixels[y * 8 + x] + shift;
                            }
                        }
                    }
                }
            }
        }
    }
    // Find where the entropy-coded data ended: the next marker that is not RSTn.
    let mut end = reader.position.min(data.len());
    while end + 1 < data.len() {
        if data[end] == 0xFF && data[end + 1] != 0x00 && !(0xD0..=0xD7).contains(&data[end + 1]) {
            break;
        }
        end += 1;
    }
    Ok(end)
}
