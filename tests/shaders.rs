//! Every WGSL file in shaders/ parses and validates with naga (the compiler wgpu uses).

#[test]
fn every_shader_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        checked += 1;
    }
    assert!(checked >= 1, "no shaders found in {}", dir.display());
}

/// The uniform block the Rust side uploads has the size the shader declares.
#[test]
fn overlay_uniforms_match_the_shader() {
    let source = fovea::app::overlay::SHADER;
    let module = naga::front::wgsl::parse_str(source).unwrap();
    let uniforms = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Uniforms"))
        .map(|(handle, _)| handle)
        .expect("Uniforms struct");
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    assert_eq!(
        layouter[uniforms].size as usize,
        std::mem::size_of::<fovea::app::overlay::OverlayUniforms>()
    );
}
