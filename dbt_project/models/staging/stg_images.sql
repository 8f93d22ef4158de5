{{ config(unique_key='sop_instance_uid') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- Columns and casts come from the internal_column_types seed (macros/seeds.sql). Incremental:
    this build's batches merged with the rows held for their keys (macros/increments.sql). #}
with source as (
    select * from {{ raw_rows('images') }}
),

renamed as (
    select
        {{ stage_columns('images') }},
        source_key,
        batch_id,
        ingested_at
    from source
),

candidates as (
    {{ merge_with_existing('renamed', 'sop_instance_uid') }}
),

deduplicated as (
    select *
    from candidates
    where sop_instance_uid is not null
    qualify row_number() over (partition by sop_instance_uid order by source_key, ingested_at desc) = 1
)

select * from deduplicated
