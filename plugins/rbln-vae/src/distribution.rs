//! diffusers' `DiagonalGaussianDistribution`, computed on the host from the encoder's moments.

use plugin_api::tensor::shape_str;
use plugin_api::{PluginError, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// The latent distribution `N(mean, exp(logvar))` returned by `encode`.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentDistribution {
    /// `[B, latent_channels, h, w]`.
    pub mean: Tensor,
    /// Same shape as `mean`, clamped to `[-30, 20]`.
    pub logvar: Tensor,
}

fn map(t: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    let data = t.data().iter().map(|&v| f(v)).collect();
    Tensor::new(t.shape(), data).expect("same shape as the input")
}

impl LatentDistribution {
    /// Splits `moments: [B, 2C, h, w]` into mean (first C channels) and logvar (last C),
    /// clamping logvar to `[-30, 20]` as diffusers does.
    pub fn from_moments(moments: &Tensor) -> Result<LatentDistribution, PluginError> {
        let s = moments.shape();
        if s.len() != 4 || !s[1].is_multiple_of(2) || s[1] == 0 {
            return Err(PluginError::invalid(format!(
                "moments must be [B, 2 * latent_channels, h, w], got {}",
                shape_str(&s)
            )));
        }
        let half = s[1] / 2 * s[2] * s[3];
        let (mut mean, mut logvar) = (Vec::new(), Vec::new());
        for item in moments.data().chunks_exact(2 * half) {
            mean.extend_from_slice(&item[..half]);
            logvar.extend(item[half..].iter().map(|v| v.clamp(-30.0, 20.0)));
        }
        let shape = vec![s[0], s[1] / 2, s[2], s[3]];
        Ok(LatentDistribution {
            mean: Tensor::new(shape.clone(), mean)?,
            logvar: Tensor::new(shape, logvar)?,
        })
    }

    /// `exp(0.5 * logvar)`.
    pub fn std(&self) -> Tensor {
        map(&self.logvar, |l| (0.5 * l).exp())
    }

    /// `exp(logvar)`.
    pub fn var(&self) -> Tensor {
        map(&self.logvar, f32::exp)
    }

    /// `mean + std * eps` with `eps ~ N(0, 1)` drawn from a ChaCha8 generator seeded with
    /// `seed` (rand_distr's `StandardNormal`). Deterministic per seed, but not the same stream
    /// as `torch.Generator`, so samples differ from diffusers' for the same seed.
    pub fn sample(&self, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = self
            .mean
            .data()
            .iter()
            .zip(self.logvar.data())
            .map(|(&m, &l)| {
                let eps: f32 = StandardNormal.sample(&mut rng);
                m + (0.5 * l).exp() * eps
            })
            .collect();
        Tensor::new(self.mean.shape(), data).expect("same shape as mean")
    }

    /// The mode, which is the mean.
    pub fn mode(&self) -> Tensor {
        self.mean.clone()
    }

    fn per_item(&self, f: impl Fn(usize) -> f32) -> Vec<f32> {
        let s = self.mean.shape();
        let n = s[1..].iter().product::<usize>();
        (0..s[0])
            .map(|b| 0.5 * (b * n..(b + 1) * n).map(&f).sum::<f32>())
            .collect()
    }

    /// KL divergence to `N(0, 1)` per batch item:
    /// `0.5 * sum_{C,H,W}(mean^2 + var - 1 - logvar)`.
    pub fn kl(&self) -> Vec<f32> {
        let (m, l) = (self.mean.data(), self.logvar.data());
        self.per_item(|i| m[i] * m[i] + l[i].exp() - 1.0 - l[i])
    }

    /// Negative log-likelihood of `x` per batch item:
    /// `0.5 * sum_{C,H,W}(log(2 pi) + logvar + (x - mean)^2 / var)`.
    /// Errors when `x`'s shape differs from `mean`'s.
    pub fn try_nll(&self, x: &Tensor) -> Result<Vec<f32>, PluginError> {
        if x.shape() != self.mean.shape() {
            return Err(PluginError::invalid(format!(
                "nll: sample shape {} differs from the distribution's shape {}",
                shape_str(&x.shape()),
                shape_str(&self.mean.shape())
            )));
        }
        let (m, l, xs) = (self.mean.data(), self.logvar.data(), x.data());
        let log_two_pi = (2.0 * std::f32::consts::PI).ln();
        Ok(self.per_item(|i| {
            let d = xs[i] - m[i];
            log_two_pi + l[i] + d * d / l[i].exp()
        }))
    }

    /// [`Self::try_nll`], returning NaN for every batch item when the shapes differ.
    pub fn nll(&self, x: &Tensor) -> Vec<f32> {
        self.try_nll(x)
            .unwrap_or_else(|_| vec![f32::NAN; self.mean.shape()[0]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist() -> LatentDistribution {
        // moments [2, 2, 1, 2]: batch 0 mean [0.5, -1], logvar [0, 100 -> 20];
        // batch 1 mean [1, 2], logvar [-100 -> -30, ln 4].
        let m = Tensor::new(
            vec![2, 2, 1, 2],
            vec![0.5, -1.0, 0.0, 100.0, 1.0, 2.0, -100.0, 4f32.ln()],
        )
        .unwrap();
        LatentDistribution::from_moments(&m).unwrap()
    }

    #[test]
    fn split_and_clamp() {
        let d = dist();
        assert_eq!(d.mean.shape(), vec![2, 1, 1, 2]);
        assert_eq!(d.mean.data(), &[0.5, -1.0, 1.0, 2.0]);
        assert_eq!(&d.logvar.data()[..3], &[0.0, 20.0, -30.0]);
        assert!((d.std().data()[3] - 2.0).abs() < 1e-6);
        assert!((d.var().data()[3] - 4.0).abs() < 1e-5);
        assert_eq!(d.mode(), d.mean);
        assert!(LatentDistribution::from_moments(&Tensor::zeros(vec![1, 3, 2, 2])).is_err());
    }

    #[test]
    fn kl_and_nll_match_formulas() {
        // torch: d = DiagonalGaussianDistribution(moments); d.kl(), d.nll(x)
        let d = dist();
        let kl = d.kl();
        let want0 = 0.5 * ((0.25 + 1.0 - 1.0 - 0.0) + (1.0 + 20f32.exp() - 1.0 - 20.0));
        assert!((kl[0] - want0).abs() / want0 < 1e-6, "{kl:?}");
        let x = Tensor::new(vec![2, 1, 1, 2], vec![0.5, -1.0, 1.0, 4.0]).unwrap();
        let nll = d.nll(&x);
        let l2p = (2.0 * std::f32::consts::PI).ln();
        let want1 = 0.5 * ((l2p - 30.0) + (l2p + 4f32.ln() + 4.0 / 4.0));
        assert!((nll[1] - want1).abs() < 1e-4, "{nll:?} vs {want1}");
        assert!(d.try_nll(&Tensor::zeros(vec![1, 1, 1, 2])).is_err());
        assert!(d.nll(&Tensor::zeros(vec![1, 1, 1, 2]))[0].is_nan());
    }

    #[test]
    fn sample_is_seeded() {
        let d = dist();
        let (a, b, c) = (d.sample(1), d.sample(1), d.sample(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Item 1, position 0 has std exp(-15): the sample equals the mean.
        assert!((a.data()[2] - 1.0).abs() < 1e-5);
    }
}
