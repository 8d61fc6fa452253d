"""Export: the network from a raw image to its raw outputs as ONNX or a torch.export program,
and running it without PyTorch.

- `exportable_model`: ExportableMaskFormer, image [1, 3, H, W] RGB 0-255 -> pred_logits, pred_masks
  (normalisation and padding inside);
- `torch_export`: the torch.export program (static or dynamic size), saved and loaded with its metadata;
- `onnx_export`: that program translated to ONNX (opset 18) by torch.onnx's dynamo exporter;
- `metadata`: what the exported file says about its input and the config's inference settings;
- `onnx_runtime` + `numpy_postprocess`: onnxruntime and NumPy only, semantic/instance/panoptic results.
"""
