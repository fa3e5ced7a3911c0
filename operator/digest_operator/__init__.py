"""DigestPipeline operator."""
