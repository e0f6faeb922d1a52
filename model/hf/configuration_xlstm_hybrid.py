# configuration_xlstm_hybrid.py — the configuration of an xdistill hybrid xLSTM student, as
# `xtrain export` writes it: the teacher's Llama-style fields plus the student's settings.
# Shipped by xdistill as data (copied into the exported directory), read by transformers with
# trust_remote_code=True; nothing of xdistill runs Python.
from transformers import PretrainedConfig


class XlstmHybridConfig(PretrainedConfig):
    model_type = "xlstm_hybrid"

    def __init__(
        self,
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=None,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=None,
        attention_bias=False,
        attention_out_bias=False,
        hidden_act="silu",
        window=512,
        sinks=4,
        chunk=64,
        mlstm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attention_bias = attention_bias
        self.attention_out_bias = attention_out_bias
        self.hidden_act = hidden_act
        # the sliding window (W most recent keys) and sink tokens (the first S) of the attention
        # branch, the mLSTM's chunk length in xdistill (unused here: the form below is parallel)
        # and the epsilon added to its stabilised denominator
        self.window = window
        self.sinks = sinks
        self.chunk = chunk
        self.mlstm_eps = mlstm_eps
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )
