from .pipeline_gesco import GescoPipeline, GescoPipelineOutput, PreparedSemanticMap

__all__ = ["GescoPipeline", "GescoPipelineOutput", "PreparedSemanticMap"]
