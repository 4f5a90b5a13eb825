"""Grad-CAM maps of a :class:`~medcl.evaluate.classifier.Classifier`: where the model looks.

Grad-CAM (Selvaraju et al., ICCV 2017) weights the activation maps of a convolutional layer by the
spatially averaged gradient of one class logit, sums them, keeps the positive part and upsamples
to the input. Here it is computed with :class:`monai.visualize.GradCAM` on
``encoder.layer4`` (the last residual stage of the MONAI ResNet), with the classifier's
``forward`` (normalised image → logits) as the network.

A kNN head has no gradient (its vote is not differentiable), so Grad-CAM is not available for it.
MONAI registers hooks on the network when a ``GradCAM`` is built, so :class:`GradCamExplainer`
builds it once per model and serialises calls with a lock (the dashboard shares one model between
browser sessions).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F

from medcl.data.resize import resize_to
from medcl.evaluate.classifier import Classifier, KNNHead

TARGET_LAYER = "encoder.layer4"


class GradCamExplainer:
    """Grad-CAM for one classifier.

    Args:
        clf: The classifier (a copy used only for Grad-CAM: hooks are added to it).
        target_layer: Dotted name of the convolutional stage whose activations are used.
    """

    def __init__(self, clf: Classifier, target_layer: str = TARGET_LAYER) -> None:
        self.clf = clf.eval()
        self.reason = ""
        self._cam = None
        self._lock = threading.Lock()
        if isinstance(clf.head, KNNHead):
            self.reason = "this model has a kNN head, which has no gradient for Grad-CAM"
            return
        from monai.visualize import GradCAM

        # MONAI's default post-processing rescales the map so that its strongest response becomes
        # 0 (hot = least relevant); keep the raw map and normalise it here instead.
        self._cam = GradCAM(
            nn_module=self.clf, target_layers=target_layer, postprocessing=lambda t: t
        )

    @property
    def available(self) -> bool:
        """Whether maps can be computed (otherwise :attr:`reason` says why)."""
        return self._cam is not None

    def __call__(self, image: np.ndarray | torch.Tensor, class_idx: int) -> np.ndarray:
        """The Grad-CAM map of ``class_idx`` for one image, in [0, 1], at the image's own size.

        Args:
            image: One image in cache units, ``(1, H, W)`` or ``(1, D, H, W)``.
            class_idx: Class whose logit is explained.

        Returns:
            ``(H, W)`` or ``(D, H, W)`` float32 map (all zeros when the gradient vanishes).

        Raises:
            RuntimeError: If Grad-CAM is not available for this model.
        """
        if self._cam is None:
            raise RuntimeError(f"Grad-CAM unavailable: {self.reason}")
        d = self.clf.description
        dims = d.spatial_dims
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        spatial = tuple(x.shape[-dims:])
        inp = self.clf.normalize(resize_to(x, d.image_size, dims))[None]
        dev = next(self.clf.parameters()).device
        with self._lock, torch.enable_grad():
            cam = self._cam(x=inp.to(dev), class_idx=int(class_idx))
        cam = cam.detach().float().cpu()
        if tuple(cam.shape[2:]) != spatial:
            mode = "bilinear" if dims == 2 else "trilinear"
            cam = F.interpolate(cam, size=spatial, mode=mode, align_corners=False)
        out = cam[0, 0].numpy()
        lo, hi = float(out.min()), float(out.max())
        if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
            return np.zeros(spatial, dtype=np.float32)
        return ((out - lo) / (hi - lo)).astype(np.float32)
