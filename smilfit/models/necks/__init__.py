"""Necks: multi-view fusion and embedding fusion."""
from .feature_fusion import FeatureFusionNeck
from .fusion import CrossViewFusion, masked_view_mean, valid_view_mask

__all__ = ['CrossViewFusion', 'FeatureFusionNeck', 'masked_view_mean', 'valid_view_mask']
