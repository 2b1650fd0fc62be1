fn main() {
    println!("director {}", env!("CARGO_PKG_VERSION"));
}
