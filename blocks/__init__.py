"""Block classes and the code that registers an environment's block documents."""

from blocks.settings import DicomPipelineSettings, PipelineConfig, resolve_config

__all__ = ["DicomPipelineSettings", "PipelineConfig", "resolve_config"]
