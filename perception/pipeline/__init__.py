"""One synced bundle in, one DetectionList out: preprocess, engines, fusion, postprocess."""

from perception.pipeline.pipeline import Pipeline, PipelineConfig

__all__ = ["Pipeline", "PipelineConfig"]
