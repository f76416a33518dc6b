use rmlx::ops;

#[test]
fn transpose_view_copies_on_flatten() {
    let a = rmlx::Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let t = ops::transpose(&a, None).unwrap();
    let f = ops::reshape(&t, &[-1]).unwrap();
    assert_eq!(f.to_vec::<i32>().unwrap(), vec![1, 4, 2, 5, 3, 6]);
    let s = ops::slice(&a, &[0, 2], &[2, 0], &[1, -1]).unwrap();
    assert_eq!(s.shape(), &[2, 2]);
    assert_eq!(s.to_vec::<i32>().unwrap(), vec![3, 2, 6, 5]);
    assert_eq!(
        ops::astype(&a, rmlx::Dtype::F16).to_vec::<f32>().unwrap()[5],
        6.0
    );
}
