"""Request and answer formats with no Flask in them: JSON bodies and ids, the Open
Inference Protocol's tensors and Triton's binary framing."""
