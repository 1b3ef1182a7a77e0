# Multi-view regressor on a ViT-B/16 per view (shared weights; patch tokens fused across
# views, then the IEF decoder over all views' tokens). Weights from a local file only:
# model.backbone.checkpoint=...
_base_ = ['./multi_view_resnet.py']
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='vit_base_patch16_224',
                  checkpoint=None, frozen=None,
                  model_kwargs=dict(img_size=256, drop_path_rate=0.1)),
    neck=dict(dim=512),
    head=dict(dim=512, depth=4, num_heads=8, num_iterations=3),
)
