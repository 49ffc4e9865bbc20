//! The optimization passes, one struct per file, run in the order of [`pipeline`].

mod constant_fold;
mod fold_upsample;
mod fuse_attention;
mod fuse_group_norm_silu;
mod fuse_residual_add;
mod pack_conv_weights;
mod pack_linear_weights;
mod packing;
mod pass;
mod plan_memory;
mod schedule_memory;
mod select_winograd;

pub use constant_fold::ConstantFold;
pub use fold_upsample::FoldUpsample;
pub use fuse_attention::FuseAttention;
pub use fuse_group_norm_silu::FuseGroupNormSilu;
pub use fuse_residual_add::FuseResidualAdd;
pub use pack_conv_weights::PackConvWeights;
pub use pack_linear_weights::PackLinearWeights;
pub use pass::{Pass, ProgressFn};
pub use plan_memory::PlanMemory;
pub use schedule_memory::ScheduleMemory;
pub use select_winograd::{im2col_gemm_cost, winograd_cost, SelectWinograd};

/// Every pass, in order. `SelectWinograd` runs before `FoldUpsample` (which folds only into
/// Winograd convolutions) and before `PackConvWeights` (which packs only the
/// convolution weights still plain); `ScheduleMemory` runs after every pass that adds, removes
/// or fuses steps, and `PlanMemory` must stay last: the others invalidate memory plans.
pub fn pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(ConstantFold),
        Box::new(FuseGroupNormSilu),
        Box::new(FuseAttention),
        Box::new(SelectWinograd),
        Box::new(FoldUpsample),
        Box::new(FuseResidualAdd),
        Box::new(PackConvWeights),
        Box::new(PackLinearWeights),
        Box::new(ScheduleMemory),
        Box::new(PlanMemory),
    ]
}
