# Single-view regressor on a ViT-B/16 (patch tokens as the decoder's memory), as in
# HMR 2.0 / AniMer. Weights from a local file only: model.backbone.checkpoint=...
_base_ = ['./single_view_resnet.py']
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='vit_base_patch16_224',
                  checkpoint=None, model_kwargs=dict(img_size=256, drop_path_rate=0.1)),
    head=dict(dim=512, depth=4, num_heads=8, num_iterations=3),
)
