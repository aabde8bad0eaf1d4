"""ToolRec: an LLM recommender that plans with retrieval and rank tools (Zhao et al., SIGIR 2024).

"Let Me Do It For You: Towards LLM Empowered Recommendation via Tool Learning". The model
acts as a surrogate of the user: from the recent history, the reactions and the latest
reflective instruction it decides which attributes to explore, calls attribute-oriented
tools in a bounded ReAct loop, and finishes with a slate.

    from recoworld.agents import make_recommender
    agent = make_recommender("toolrec", catalog, slate_size=10, seed=0, llm=LLMConfig(backend="local"))
    slate = agent.act(observation, info)      # positions into observation["candidate_ids"]
    agent.last_trace                          # thoughts, tool calls, results, final slate (JSON-ready)

- `tools.py`: the tools (over the turn's candidate set, plus `search` over the whole catalog
  through the platform when a search service is connected) and their argument schemas.
- `prompts.py`: the scratchpad prompt.
- `agent.py`: the loop, validation-as-observation, the merge and top-up.

From the command line: `recoworld simulate --agents toolrec,instruct --llm local` (or
`--llm openai --llm-base-url ... --llm-model ...`); the study's `WorldConfig.llm` drives
ToolRec, and the trajectory's `agent_trace` column keeps every turn's trace.
"""

from recoworld.agents.toolrec.agent import ToolRecConfig, ToolRecRecommender
from recoworld.agents.toolrec.tools import ATTRIBUTES, SCORERS, CandidatePool, ToolBox, ToolResult, toolset

__all__ = ["ATTRIBUTES", "SCORERS", "CandidatePool", "ToolBox", "ToolRecConfig", "ToolRecRecommender", "ToolResult",
           "toolset"]
