"""The one home of every closed set of option values: the click choices, the Python API's checks
and the engines all read these tuples (the first value is the default where there is one)."""

MODES = ("deconvnet", "backprop", "guided")  # how a signal passes a ReLU going back (README: cnn project)
KEEPS = ("map", "max")  # seed a channel's whole map, or only its strongest unit
NORMS = ("grey", "minmax", "percentile")  # how a projection becomes pixels
PRESETS = ("imagenet", "caffe", "unit", "raw")  # image preprocessing
PROVIDERS = ("auto", "cpu", "cuda")  # onnxruntime execution providers
ENGINES = ("local", "ray")  # where `cnn top` scans
GROUPINGS = ("layer", "op")  # `cnn stats --by`
OPT_LEVELS = ("all", "extended", "basic", "disable")  # `cnn profile --opt-level`: what onnxruntime may fuse
CAM_METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam", "scorecam")  # `cnn cam --method`
IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")  # `cnn project --ig-method` (Captum's)
DREAM_OBJECTIVES = ("channel", "neuron", "layer")  # `cnn dream --objective` (Lucent's channel and neuron, Lucid's deepdream)
FORMATS = ("table", "json", "jsonl", "csv", "markdown")  # --format: the one renderer's formats
