//! `uniffi-bindgen` of the workspace's uniffi version: generates the Kotlin, Swift and
//! Python bindings from the built library (`mobile-bindings/generate.sh` runs it).

fn main() {
    uniffi::uniffi_bindgen_main()
}
