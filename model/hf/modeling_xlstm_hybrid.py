# modeling_xlstm_hybrid.py — an xdistill hybrid xLSTM student in PyTorch, for transformers
# (AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)). The maths is xdistill's
# (model/student_impl.h, kernels/): per layer, the teacher's q/k/v projections feed two branches,
# sliding-window attention with sink tokens and an mLSTM over Hedgehog feature maps, mixed per
# head by an output gate, then W_o and the teacher's SwiGLU MLP. The mLSTM is computed in its
# parallel (quadratic) form in log space, in float64; xdistill runs the chunkwise and step forms
# of the same recurrence. No KV cache: every forward reads the whole sequence.
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

try:
    from transformers import GenerationMixin
except ImportError:  # transformers < 4.45: PreTrainedModel generates by itself
    GenerationMixin = object

from .configuration_xlstm_hybrid import XlstmHybridConfig


def wide(x):
    """x in at least float32: bf16/fp16 models compute norms, softmaxes and gates in float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class XlstmHybridRMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        var = wide(x).pow(2).mean(-1, keepdim=True)
        return (wide(x) * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight


def rope_inv_freq(config):
    """Per-pair inverse frequencies with the scaling xdistill reads (model/config.c)."""
    d = config.head_dim
    inv = [config.rope_theta ** (-2.0 * i / d) for i in range(d // 2)]
    s = config.rope_scaling or {}
    kind = s.get("rope_type", s.get("type", "default"))
    if kind == "linear":
        inv = [f / s["factor"] for f in inv]
    elif kind == "llama3":
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        orig = s["original_max_position_embeddings"]
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen > orig / lo:
                f = f / factor
            elif wavelen >= orig / hi:
                smooth = (orig / wavelen - lo) / (hi - lo)
                f = (1 - smooth) * f / factor + smooth * f
            out.append(f)
        inv = out
    elif kind != "default":
        raise ValueError(f"rope type {kind!r} is not supported (default, linear, llama3)")
    return inv


def apply_rope(x, cos, sin):
    """x [B, heads, T, d]; rotate-half RoPE: pairs (i, i + d/2)."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


class GateProjection(nn.Module):
    """y = x w + b with w stored [in, out], as xdistill keeps its gate weights."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class GateProjectionRows(nn.Module):
    """z_h = w[h] . u_h + b_h: one weight row per head, over that head's [q; k; v]."""

    def __init__(self, heads, n_in):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(heads, n_in))
        self.bias = nn.Parameter(torch.zeros(heads))

    def forward(self, u):  # u [B, H, T, n_in]
        return (u * self.weight.unsqueeze(1)).sum(-1) + self.bias.unsqueeze(-1)


def mlstm_parallel(phi_q, phi_k, v, itilde, log_f, eps):
    """The stabilised mLSTM of kernels/mlstm.h over whole sequences, in float64.
    phi_q, phi_k, v [B, H, T, d]; itilde, log_f [B, H, T]. With D[t, s] = itilde_s +
    sum_{r=s+1..t} log_f_r (s <= t) and m_t = max_s D[t, s] (the running max of the recurrence),
    h_t = sum_s exp(D - m) (q_t.k_s) v_s / (sum_s exp(D - m) (q_t.k_s) + eps): eps is added to the
    denominator at the stabilised scale, as in xdistill, and there is no floor."""
    dt = torch.float64
    q, k, v = phi_q.to(dt), phi_k.to(dt), v.to(dt)
    T = q.shape[-2]
    cum = torch.cumsum(log_f.to(dt), dim=-1)
    dmat = cum.unsqueeze(-1) - cum.unsqueeze(-2) + itilde.to(dt).unsqueeze(-2)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    dmat = dmat.masked_fill(~causal, float("-inf"))
    m = dmat.amax(dim=-1, keepdim=True)
    w = torch.exp(dmat - m) * (q @ k.transpose(-1, -2))
    den = w.sum(dim=-1, keepdim=True)
    return (w @ v) / (den + eps)


def swa_with_sinks(q, k, v, window, sinks):
    """Softmax attention of query t over keys j <= t with j < sinks or j > t - window.
    q [B, H, T, d]; k, v already repeated to H heads."""
    T, d = q.shape[-2], q.shape[-1]
    t = torch.arange(T, device=q.device)
    j = t.unsqueeze(0)
    ti = t.unsqueeze(1)
    allowed = (j <= ti) & ((j < sinks) | (j > ti - window))
    scores = (wide(q) @ wide(k).transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ wide(v)).to(q.dtype)


class XlstmHybridAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        D, H, G, d = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.H, self.G, self.d = H, G, d
        self.window, self.sinks, self.eps = config.window, config.sinks, config.mlstm_eps
        self.q_proj = nn.Linear(D, H * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(D, G * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(D, G * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(H * d, D, bias=config.attention_out_bias)
        # Hedgehog feature maps phi(x) = softmax(x M_h) of the RoPE'd q and k, one M per query head
        self.fmap_q = nn.Parameter(torch.eye(d).repeat(H, 1, 1))
        self.fmap_k = nn.Parameter(torch.eye(d).repeat(H, 1, 1))
        self.igate = GateProjection(D, H)  # i = exp(x w_i + b_i)
        self.fgate = GateProjection(D, H)  # log f = logsigmoid(x w_f + b_f)
        self.ogate = GateProjectionRows(H, 3 * d)  # o = sigmoid(w_o [q; k; v] + b_o) per head

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, G, d = self.H, self.G, self.d
        q0 = self.q_proj(x).view(B, T, H, d).transpose(1, 2)
        k0 = self.k_proj(x).view(B, T, G, d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, G, d).transpose(1, 2)
        rep = H // G
        k0h, vh = k0.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # the output gate reads the pre-RoPE q, the group's k and v
        o = torch.sigmoid(self.ogate(torch.cat((q0, k0h, vh), dim=-1)))  # [B, H, T]
        qr, kr = apply_rope(q0, cos, sin), apply_rope(k0h, cos, sin)
        yswa = swa_with_sinks(qr, kr, vh, self.window, self.sinks)
        phi_q = torch.softmax(wide(qr) @ wide(self.fmap_q).unsqueeze(0), dim=-1)
        phi_k = torch.softmax(wide(kr) @ wide(self.fmap_k).unsqueeze(0), dim=-1)
        itilde = self.igate(x).transpose(1, 2)  # [B, H, T]
        log_f = F.logsigmoid(wide(self.fgate(x))).transpose(1, 2)
        hm = mlstm_parallel(phi_q, phi_k, vh, itilde, log_f, self.eps).to(x.dtype)
        o = o.unsqueeze(-1)
        y = o * hm + (1 - o) * yswa
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * d))


class XlstmHybridMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        D, Fd = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(D, Fd, bias=False)
        self.up_proj = nn.Linear(D, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class XlstmHybridDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = XlstmHybridRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = XlstmHybridAttention(config)
        self.post_attention_layernorm = XlstmHybridRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = XlstmHybridMLP(config)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class XlstmHybridPreTrainedModel(PreTrainedModel):
    config_class = XlstmHybridConfig
    base_model_prefix = "model"
    _no_split_modules = ["XlstmHybridDecoderLayer"]

    def _init_weights(self, module):
        # every weight comes from the checkpoint; this only keeps fresh modules finite
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=0.02)


class XlstmHybridModel(XlstmHybridPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(XlstmHybridDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = XlstmHybridRMSNorm(config.hidden_size, config.rms_norm_eps)
        # floats, not a buffer: transformers may build the model on the meta device and fill in
        # only what the checkpoint holds
        self.inv_freq = rope_inv_freq(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids):
        x = self.embed_tokens(input_ids)
        T = input_ids.shape[-1]
        # angles in float64, then cast, as xdistill's RoPE tables
        pos = torch.arange(T, dtype=torch.float64, device=x.device)
        inv = torch.tensor(self.inv_freq, dtype=torch.float64, device=x.device)
        ang = pos.unsqueeze(1) * inv.unsqueeze(0)
        cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class XlstmHybridForCausalLM(XlstmHybridPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = XlstmHybridModel(config)
        # a tied LM head is the embedding itself (no lm_head tensor in the checkpoint)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return None if self.config.tie_word_embeddings else self.lm_head

    def tie_weights(self, *args, **kwargs):
        pass  # tying is done in forward

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **kwargs):
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("padding is not supported: every sequence must be full (attention_mask all 1)")
        hidden = self.model(input_ids)
        w = self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight
        logits = hidden @ w.t()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                wide(logits[:, :-1]).reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)
