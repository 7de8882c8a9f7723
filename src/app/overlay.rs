//! The GPU image + attention overlay: fovea's own WGSL pipeline (shaders/overlay.wgsl) drawn
//! through an egui_wgpu paint callback.
//!
//! Long-lived objects (pipeline, layout) are made once at start-up and kept in egui_wgpu's
//! callback resources; each pane keeps its textures there too and re-uploads them only when
//! their content key changes. A frame passes only the small uniform block and the keys.

use std::collections::HashMap;
use std::sync::Arc;

use eframe::egui_wgpu::{self, wgpu};

pub const SHADER: &str = include_str!("../../shaders/overlay.wgsl");

/// Keep in sync with `Uniforms` in shaders/overlay.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OverlayUniforms {
    pub image_size: [f32; 2],
    pub grid_size: [f32; 2],
    pub view_min: [f32; 2],
    pub view_max: [f32; 2],
    pub input_origin: [f32; 2],
    pub input_scale: [f32; 2],
    pub input_size: [f32; 2],
    pub window_center: f32,
    pub window_width: f32,
    pub invert: f32,
    pub is_colour: f32,
    pub colour_scale: f32,
    pub heat_opacity: f32,
    pub heat_smooth: f32,
    pub colormap: f32,
    pub mask_mode: f32,
    pub show_heat: f32,
}

/// Pixels of the image: RGBA f32 (modality values in r for greyscale).
pub struct ImagePixels {
    pub key: u64,
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<f32>,
}

/// A token-grid map (heatmap levels 0..1 or a 0/1 mask).
pub struct GridValues {
    pub key: u64,
    pub cols: u32,
    pub rows: u32,
    pub values: Vec<f32>,
}

/// What one pane draws this frame.
pub struct PaneCallback {
    pub pane: u32,
    pub uniforms: OverlayUniforms,
    pub image: Arc<ImagePixels>,
    pub heat: Arc<GridValues>,
    pub mask: Arc<GridValues>,
}

struct Texture {
    key: u64,
    size: (u32, u32),
    texture: wgpu::Texture,
}

struct PaneResources {
    uniforms: wgpu::Buffer,
    image: Option<Texture>,
    heat: Option<Texture>,
    mask: Option<Texture>,
    bind_group: Option<wgpu::BindGroup>,
}

/// Created once from the render state; lives in `callback_resources`.
pub struct OverlayRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    panes: HashMap<u32, PaneResources>,
}

impl OverlayRenderer {
    /// Build the pipeline once and register the renderer in egui_wgpu's callback resources.
    pub fn install(render_state: &egui_wgpu::RenderState) {
        let device = &render_state.device;
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("fovea overlay"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("fovea overlay"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: std::num::NonZeroU64::new(std::mem::size_of::<
                            OverlayUniforms,
                        >()
                            as u64),
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
                texture_entry(3),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("fovea overlay"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("fovea overlay"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                targets: &[Some(render_state.target_format.into())],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        render_state
            .renderer
            .write()
            .callback_resources
            .insert(OverlayRenderer {
                pipeline,
                layout,
                panes: HashMap::new(),
            });
    }
}

fn upload(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    slot: &mut Option<Texture>,
    key: u64,
    size: (u32, u32),
    format: wgpu::TextureFormat,
    bytes: &[u8],
    bytes_per_pixel: u32,
) -> bool {
    if slot
        .as_ref()
        .is_some_and(|t| t.key == key && t.size == size)
    {
        return false;
    }
    let extent = wgpu::Extent3d {
        width: size.0.max(1),
        height: size.1.max(1),
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("fovea overlay texture"),
        size: extent,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let expected = (extent.width * extent.height * bytes_per_pixel) as usize;
    if bytes.len() >= expected {
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            &bytes[..expected],
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(extent.width * bytes_per_pixel),
                rows_per_image: Some(extent.height),
            },
            extent,
        );
    }
    *slot = Some(Texture { key, size, texture });
    true
}

impl egui_wgpu::CallbackTrait for PaneCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen_descriptor: &egui_wgpu::ScreenDescriptor,
        _egui_encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(renderer) = resources.get_mut::<OverlayRenderer>() else {
            return Vec::new();
        };
        let layout = &renderer.layout;
        let pane = renderer
            .panes
            .entry(self.pane)
            .or_insert_with(|| PaneResources {
                uniforms: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fovea overlay uniforms"),
                    size: std::mem::size_of::<OverlayUniforms>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                image: None,
                heat: None,
                mask: None,
                bind_group: None,
            });
        queue.write_buffer(&pane.uniforms, 0, bytemuck::bytes_of(&self.uniforms));
        let mut changed = pane.bind_group.is_none();
        changed |= upload(
            device,
            queue,
            &mut pane.image,
            self.image.key,
            (self.image.width, self.image.height),
            wgpu::TextureFormat::Rgba32Float,
            bytemuck::cast_slice(&self.image.rgba),
            16,
        );
        for (slot, grid) in [(&mut pane.heat, &self.heat), (&mut pane.mask, &self.mask)] {
            changed |= upload(
                device,
                queue,
                slot,
                grid.key,
                (grid.cols, grid.rows),
                wgpu::TextureFormat::R32Float,
                bytemuck::cast_slice(&grid.values),
                4,
            );
        }
        if changed {
            let (Some(image), Some(heat), Some(mask)) = (&pane.image, &pane.heat, &pane.mask)
            else {
                return Vec::new();
            };
            let view = |t: &Texture| {
                t.texture
                    .create_view(&wgpu::TextureViewDescriptor::default())
            };
            let (image_view, heat_view, mask_view) = (view(image), view(heat), view(mask));
            pane.bind_group = Some(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("fovea overlay"),
                layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: pane.uniforms.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&image_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&heat_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::TextureView(&mask_view),
                    },
                ],
            }));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(renderer) = resources.get::<OverlayRenderer>() else {
            return;
        };
        let Some(bind_group) = renderer
            .panes
            .get(&self.pane)
            .and_then(|p| p.bind_group.as_ref())
        else {
            return;
        };
        render_pass.set_pipeline(&renderer.pipeline);
        render_pass.set_bind_group(0, bind_group, &[]);
        render_pass.draw(0..6, 0..1);
    }
}

/// RGBA f32 pixels of a frame for the GPU: modality values in r for greyscale.
pub fn gpu_pixels(study: &crate::imaging::Study, frame: usize, key: u64) -> ImagePixels {
    let values = study
        .frames
        .get(frame)
        .map(|f| f.values.as_slice())
        .unwrap_or(&[]);
    let rgba: Vec<f32> = match study.photometric {
        crate::imaging::Photometric::Rgb => values
            .chunks_exact(3)
            .flat_map(|c| [c[0], c[1], c[2], 1.0])
            .collect(),
        _ => values.iter().flat_map(|&v| [v, v, v, 1.0]).collect(),
    };
    ImagePixels {
        key,
        width: study.width,
        height: study.height,
        rgba,
    }
}
