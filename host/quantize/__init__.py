"""Stage 3, trained model folder -> int8 TFLite for the Edge TPU: export to Edge-TPU-listed ops,
convert (float and full int8), slim, the float-vs-int8 gate, the Edge TPU check and edgetpu_compiler."""
