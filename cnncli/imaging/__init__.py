"""Pictures in and out: decoding and preprocessing images, finding them, projection pictures and figures."""
