//! Helpers the ops' tests share: seeded inputs, the largest difference, finite-difference
//! gradient checks, and the check of a fused op against its composition.

use candle_core::{DType, Device, Result, Tensor, Var};

/// Seeded N(0, 1) values (f32).
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let v = crate::rng::normal_vec(shape.iter().product(), 1.0, seed);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub use doctune_testkit::max_abs_diff as max_diff;

/// Checks `grad`, the analytic gradient of `loss` at `x0` (f64), element by element against
/// central differences (step 1e-6) within `tol`.
pub fn assert_finite_differences(
    x0: &Tensor,
    grad: &Tensor,
    loss: impl Fn(&Tensor) -> f64,
    tol: f64,
    what: &str,
) {
    let x: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
    let g: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-6;
    for i in 0..x.len() {
        let at = |d: f64| {
            let mut v = x.clone();
            v[i] += d;
            loss(&Tensor::from_vec(v, x0.shape(), x0.device()).unwrap())
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() < tol,
            "{what} element {i}: analytic {} vs numeric {fd}",
            g[i]
        );
    }
}

/// Fixed weights `sin(0.37·i)` (f64) that turn an output into a scalar loss.
pub fn sin_weights(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    Tensor::from_vec(w, shape, &Device::Cpu).unwrap()
}

/// Each composition against finite differences of itself (f64).
pub fn check_grad(f: impl Fn(&Tensor) -> Result<Tensor>, shape: &[usize]) {
    let x0: Vec<f64> = crate::rng::normal_vec(shape.iter().product(), 1.0, 9)
        .into_iter()
        .map(f64::from)
        .collect();
    let x = Var::from_vec(x0, shape, &Device::Cpu).unwrap();
    let w = sin_weights(shape);
    let loss = |t: &Tensor| -> f64 {
        (f(t).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = (f(&x).unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_finite_differences(&x, grads.get(&x).unwrap(), loss, 1e-6, "x");
}

/// Loss = Σ f(args) ⊙ w for fixed weights w, and its gradients with respect to `vars`.
fn grads_of(f: &dyn Fn(&[Tensor]) -> Tensor, vars: &[Var]) -> (f64, Vec<Tensor>) {
    let args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&args);
    let w = sin_weights(y.dims());
    let loss = (y * w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    (
        loss.to_scalar::<f64>().unwrap(),
        vars.iter().map(|v| grads.get(v).unwrap().clone()).collect(),
    )
}

/// `f`'s gradients against `reference`'s and against finite differences, in f64.
pub fn check_op(
    f: &dyn Fn(&[Tensor]) -> Tensor,
    reference: &dyn Fn(&[Tensor]) -> Tensor,
    shapes: &[&[usize]],
) {
    let vars: Vec<Var> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Var::from_tensor(&randn(s, 70 + i as u64).to_dtype(DType::F64).unwrap()).unwrap()
        })
        .collect();
    let (l1, g1) = grads_of(f, &vars);
    let (l2, g2) = grads_of(reference, &vars);
    // Gradients carry no graph: a variable's gradient kept by the optimiser would otherwise
    // keep the whole step's graph alive.
    assert!(
        g1.iter().all(|g| !g.track_op()),
        "a gradient carries its graph"
    );
    assert!((l1 - l2).abs() < 1e-10, "values: {l1} vs {l2}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let d = max_diff(a, b);
        assert!(
            d < 1e-10,
            "input {i}: gradients differ from the composition by {d}"
        );
    }
    for (which, g) in g1.iter().enumerate() {
        let loss = |x: &Tensor| {
            let mut args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().detach()).collect();
            args[which] = x.clone();
            let consts: Vec<Var> = args.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            grads_of(f, &consts).0
        };
        assert_finite_differences(&vars[which], g, loss, 1e-6, &format!("input {which}"));
    }
}
