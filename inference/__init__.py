"""OpenVINO runtime and model packs. Imports openvino and numpy, never torch or nncf."""
