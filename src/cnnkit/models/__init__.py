"""Model families. Importing this package registers every builder (see cnnkit.registry).

One module per family; each module's @register_model decorators run on import.
"""

from cnnkit.models import lenet, resnet_cifar, simple_cnn  # noqa: F401

# Families added later are imported below, one line each:
from cnnkit.models import fastnet  # noqa: F401,E402
from cnnkit.models import custom  # noqa: F401,E402
# The model zoo: thin builders over torchvision and timm (adapt.py fits them to in_chans and small inputs).
from cnnkit.models import alexnet, coatnet, convnext, densenet, efficientnet, ghostnet  # noqa: F401,E402
from cnnkit.models import googlenet, mobilenet, nasnet, regnet, resnet, shufflenet, swin, vgg, vit  # noqa: F401,E402
# Segmentation (task="segment" / "instance"): FCN, DeepLabV3(+), U-Net, Mask R-CNN.
from cnnkit.models import segmentation, segmentation_maskrcnn, unet  # noqa: F401,E402
# Detection (task="detect"): Faster R-CNN, SSD, the YOLO-style detector, R-CNN and Fast R-CNN.
from cnnkit.models import faster_rcnn, rcnn, ssd, yolo  # noqa: F401,E402
# Instance segmentation on the YOLO-style detector (task="instance"): prototype masks, YOLACT style.
from cnnkit.models import yolo_seg  # noqa: F401,E402
# Embeddings (task="embed"): face recognition and metric learning.
from cnnkit.models import embedding  # noqa: F401,E402
# Architecture search's design spaces (cnnkit.search): AnyNetX/RegNetX as YAML specs, DARTS cells.
from cnnkit.models import anynet, darts  # noqa: F401,E402
# Self-supervised pretraining (task="pretrain"): SimCLR, MoCo, MAE, BEiT-style (MaskFeat targets).
from cnnkit.models import ssl  # noqa: F401,E402
