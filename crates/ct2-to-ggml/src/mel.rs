//! The mel filterbank stored in a whisper ggml file.
//!
//! OpenAI's `mel_filters.npz` (which the official ggml files copy) was made
//! with `librosa.filters.mel(sr=16000, n_fft=400, n_mels=N)`: Slaney mel
//! scale, Slaney area normalisation. This reproduces librosa's arithmetic
//! step by step — triangle weights computed in f64 and stored into an f32
//! array, then multiplied in place by the f64 normalisation — so the values
//! come out bit for bit, signed zeros included.

/// Whisper's audio sample rate, Hz.
pub const SAMPLE_RATE_HZ: f64 = 16_000.0;
/// Whisper's STFT window, samples (25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Frequency bins of a real FFT of `N_FFT` samples.
pub const N_FFT_BINS: usize = N_FFT / 2 + 1;

/// Slaney scale: linear below 1 kHz at 200/3 Hz per mel, logarithmic above.
const LINEAR_HZ_PER_MEL: f64 = 200.0 / 3.0;
const LOG_START_HZ: f64 = 1000.0;
const LOG_START_MEL: f64 = LOG_START_HZ / LINEAR_HZ_PER_MEL;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= LOG_START_HZ {
        LOG_START_MEL + (hz / LOG_START_HZ).ln() / log_step()
    } else {
        hz / LINEAR_HZ_PER_MEL
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= LOG_START_MEL {
        LOG_START_HZ * (log_step() * (mel - LOG_START_MEL)).exp()
    } else {
        LINEAR_HZ_PER_MEL * mel
    }
}

/// `numpy.linspace(start, stop, n)`: `i * step + start`, last point exact.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

/// numpy's SIMD `maximum`/`minimum` (x86 `maxpd`/`minpd`): the second
/// operand wins a tie, which is what makes librosa's first weight `-0.0`.
fn np_max(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}

fn np_min(a: f64, b: f64) -> f64 {
    if a < b {
        a
    } else {
        b
    }
}

/// The `n_mels` × [`N_FFT_BINS`] filterbank, row-major.
pub fn filterbank(n_mels: usize) -> Vec<f32> {
    // numpy.fft.rfftfreq(N_FFT, d=1/sr): bin i is at i / (n · d) Hz.
    let bin_hz = 1.0 / (N_FFT as f64 * (1.0 / SAMPLE_RATE_HZ));
    let fft_hz: Vec<f64> = (0..N_FFT_BINS).map(|i| i as f64 * bin_hz).collect();

    // n_mels + 2 band edges, equally spaced in mel from 0 Hz to Nyquist.
    let edges: Vec<f64> = linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE_HZ / 2.0), n_mels + 2)
        .into_iter()
        .map(mel_to_hz)
        .collect();

    let mut weights = vec![0f32; n_mels * N_FFT_BINS];
    for (m, row) in weights.chunks_mut(N_FFT_BINS).enumerate() {
        let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
        // Slaney normalisation: each triangle has unit area.
        let norm = 2.0 / (right - left);
        for (w, &f) in row.iter_mut().zip(&fft_hz) {
            let rising = -(left - f) / (centre - left);
            let falling = (right - f) / (right - centre);
            let triangle = np_max(0.0, np_min(rising, falling)) as f32;
            *w = (f64::from(triangle) * norm) as f32;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference numbers from a numpy transcription of librosa.filters.mel
    // (sr=16000, n_fft=400, norm="slaney"), as f32 bit patterns.
    #[test]
    fn matches_librosa_spot_values() {
        let w = filterbank(80);
        assert_eq!(w.len(), 80 * 201);
        let at = |m: usize, k: usize| w[m * N_FFT_BINS + k];
        assert_eq!(at(0, 0).to_bits(), 0x8000_0000, "librosa gives -0.0 here");
        assert_eq!(at(0, 1).to_bits(), 0x3ccb_aca4);
        assert_eq!(at(0, 2).to_bits(), 0);
        assert_eq!(at(1, 2).to_bits(), 0x3cbb_5d95);
        assert_eq!(w.iter().filter(|v| **v != 0.0).count(), 391);
        let max = w.iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(max, at(13, 13));
        assert_eq!(max, 0.025_880_683);
    }

    #[test]
    fn row_sums_match_librosa() {
        let w = filterbank(80);
        let row_sum = |m: usize| -> f64 {
            w[m * N_FFT_BINS..(m + 1) * N_FFT_BINS]
                .iter()
                .map(|&v| f64::from(v))
                .sum()
        };
        for (m, expected) in [
            (0, 0.024_862_595),
            (1, 0.024_862_593),
            (40, 0.026_664_86),
            (79, 0.024_925_34),
        ] {
            assert!(
                (row_sum(m) - expected).abs() < 1e-8,
                "row {m}: {}",
                row_sum(m)
            );
        }
    }

    #[test]
    fn large_v3_bank_has_128_rows() {
        let w = filterbank(128);
        assert_eq!(w.len(), 128 * N_FFT_BINS);
        let first_row: f64 = w[..N_FFT_BINS].iter().map(|&v| f64::from(v)).sum();
        assert!((first_row - 0.012_373_987).abs() < 1e-8, "{first_row}");
    }
}
