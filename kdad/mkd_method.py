"""Registers MKD in the method registry (kept apart from kdad.mkd so the core has no registry import)."""

from kdad.methods import MethodSpec, register_method
from kdad.mkd import MKD, MKDConfig

register_method(MethodSpec("mkd", MKDConfig, lambda cfg: MKD(cfg), localizes=True, expert_field="expert",
                           description="Multiresolution Knowledge Distillation (Salehi et al., CVPR 2021)"))
